"""The reward-versus-KL(pi || pi0) frontier of a run: its trajectory, best-of-n, and (on toy tasks) the
exact optimal curve of pi*_beta = pi0 exp(r / beta) / Z over beta.

Trajectory points are (kl/ref, reward/mean) per step, smoothed; on toy tasks the exact
(bayes/kl_ref_exact, bayes/reward_exact) are used instead. Best-of-n needs the reference's reward
distribution: exact on toy tasks (written by the trainer to ``frontier.json``), else estimated from the
step-1 samples (drawn from the initial policy, pi0) in ``samples.jsonl``, with the KL of best-of-n taken
as its bound log n - (n - 1) / n.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from langrl.bayes import best_of_n_kl_bound, empirical_best_of_n_reward
from langrl.bayes.best_of_n import BEST_OF_N
from langrl.run.io import read_jsonl


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def trajectory(rows: list[dict[str, Any]]) -> tuple[list[float], list[float], str]:
    """(KL, reward) points of the run, a moving average over ~10% of the steps, and their source."""
    exact = bool(rows) and all(finite(r.get("bayes/kl_ref_exact")) for r in rows)
    kl_key, reward_key = ("bayes/kl_ref_exact", "bayes/reward_exact") if exact else ("kl/ref", "reward/mean")
    points = [(r[kl_key], r[reward_key]) for r in rows if finite(r.get(kl_key)) and finite(r.get(reward_key))]
    window = max(1, len(points) // 10)
    kls, rewards = [], []
    for i in range(len(points)):
        chunk = points[max(0, i - window + 1): i + 1]
        kls.append(sum(p[0] for p in chunk) / len(chunk))
        rewards.append(sum(p[1] for p in chunk) / len(chunk))
    return kls, rewards, "exact" if exact else "sampled"


def reference_curves(run_dir: Path) -> dict[str, list[list[float]]]:
    """``optimal`` and ``best_of_n`` curves as [kl, reward] pairs (``optimal`` only on toy tasks)."""
    path = run_dir / "frontier.json"
    if path.exists():
        return json.loads(path.read_text())
    samples = read_jsonl(run_dir / "samples.jsonl", missing_ok=True)
    first = [r["reward"] for r in samples if r.get("step") == 1 and finite(r.get("reward"))]
    if not first:
        return {}
    rewards = torch.tensor(first, dtype=torch.float64)
    usable = [n for n in BEST_OF_N if n <= len(first)]
    return {"best_of_n": [[best_of_n_kl_bound(n), empirical_best_of_n_reward(rewards, n)] for n in usable]}


def plot_frontier(ax: Any, rows: list[dict[str, Any]], curves: dict[str, list[list[float]]]) -> None:
    """Draw the frontier panel on a matplotlib axis."""
    if "optimal" in curves:
        kl, reward = zip(*curves["optimal"], strict=True)
        ax.plot(kl, reward, color="black", linewidth=2, label="optimum pi*_beta (exact)")
    if "best_of_n" in curves:
        kl, reward = zip(*curves["best_of_n"], strict=True)
        source = "exact" if "optimal" in curves else "bound, pi0 samples"
        ax.plot(kl, reward, color="tab:green", marker="s", markersize=4, label=f"best-of-n ({source})")
    kls, rewards, source = trajectory(rows)
    if kls:
        ax.plot(kls, rewards, color="tab:blue", marker=".", markersize=3, linewidth=1,
                label=f"this run ({source})")
        ax.plot(kls[-1:], rewards[-1:], color="tab:red", marker="*", markersize=10, linestyle="none",
                label="final")
    shown = kls + [kl for kl, _ in curves.get("best_of_n", [])]
    if "optimal" in curves and shown:
        ax.set_xlim(-0.05 * max(shown), 1.3 * max(shown))  # the optimum runs on to huge KLs; show our range
        top = [r for kl, r in curves["optimal"] if kl <= 1.3 * max(shown)]
        ax.set_ylim(top=max(top + rewards) + 0.05)
    ax.set_title("Reward vs KL(pi || pi0)")
    ax.set_xlabel("KL to the reference (nats)")
    ax.set_ylabel("reward")
    ax.grid(True, alpha=0.3)
    if kls or curves:
        ax.legend(loc="best", fontsize="small")
