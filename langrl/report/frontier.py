"""The reward-versus-KL(pi || pi0) frontier of a run: its trajectory, best-of-n, and the optimal curve of
pi*_beta = pi0 exp(r / beta) / Z over beta: exact on toy tasks, else estimated from samples of pi0.

Trajectory points are (kl/ref, reward/mean) per step, smoothed; on toy tasks the exact
(bayes/kl_ref_exact, bayes/reward_exact) are used instead. The reference curves come from, in order:

- ``frontier.json``, written by the trainer on toy tasks: exact best-of-n and the exact optimum;
- the "before" evaluation samples (``eval_samples.jsonl``, several per prompt, drawn from the initial policy
  pi0): per prompt, the unbiased best-of-n reward for every n up to the samples per prompt, and pi*_beta
  estimated by self-normalised importance sampling over that prompt's samples, both averaged over prompts.
  Best-of-n's KL is its bound log n - (n - 1) / n, so the true curve lies a little to the left. The
  estimated optimum puts all of pi*'s mass on the samples drawn, so its KL cannot exceed log(samples per
  prompt); it is drawn only up to half that;
- else the step-1 training samples (also from pi0), pooled over prompts: best-of-n only.

The "after" evaluation samples, with their KL to the reference, give the trained policy's point on the
same prompts as the curves.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from langrl.bayes import (
    best_of_n_kl_bound,
    empirical_best_of_n_reward,
    optimal_frontier,
    unbiased_best_of_n_reward,
)
from langrl.bayes.best_of_n import BEST_OF_N
from langrl.run.io import read_jsonl

Curves = dict[str, list[list[float]]]
BETAS = [10 ** (k / 8) for k in range(-16, 9)]  # 0.01 .. 10


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


def phase_groups(eval_rows: list[dict[str, Any]], phase: str) -> list[list[dict[str, Any]]]:
    """The evaluation rows of ``phase`` grouped by prompt, in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in eval_rows:
        if r.get("phase") == phase and finite(r.get("reward")):
            groups[str(r.get("prompt", ""))].append(r)
    return list(groups.values())


def sampled_curves(groups: list[list[float]]) -> Curves:
    """Best-of-n and the estimated optimum from pi0's rewards, ``groups[i]`` those of prompt i (>= 2 each)."""
    m = min(len(g) for g in groups)
    tensors = [torch.tensor(g, dtype=torch.float64) for g in groups]
    best = [[best_of_n_kl_bound(n), sum(unbiased_best_of_n_reward(t, n) for t in tensors) / len(tensors)]
            for n in range(1, m + 1)]
    optimum = []
    for beta in BETAS:
        points = [optimal_frontier(torch.full_like(t, -math.log(len(t))), t, [beta])[0] for t in tensors]
        kl = sum(p.kl_opt_to_ref for p in points) / len(points)
        if kl <= 0.5 * math.log(m):
            optimum.append([kl, sum(p.reward_opt for p in points) / len(points)])
    return {"best_of_n": best, "optimum_is": sorted(optimum)}


def reference_curves(run_dir: Path) -> Curves:
    """``optimal`` (toy tasks), ``optimum_is`` and ``best_of_n`` curves as [kl, reward] pairs."""
    path = run_dir / "frontier.json"
    if path.exists():
        return json.loads(path.read_text())
    groups = [[float(r["reward"]) for r in g]
              for g in phase_groups(read_jsonl(run_dir / "eval_samples.jsonl", missing_ok=True), "before")]
    if groups and min(len(g) for g in groups) >= 2:
        return sampled_curves(groups)
    samples = read_jsonl(run_dir / "samples.jsonl", missing_ok=True)
    first = [r["reward"] for r in samples if r.get("step") == 1 and finite(r.get("reward"))]
    if not first:
        return {}
    rewards = torch.tensor(first, dtype=torch.float64)
    usable = [n for n in BEST_OF_N if n <= len(first)]
    return {"best_of_n": [[best_of_n_kl_bound(n), empirical_best_of_n_reward(rewards, n)] for n in usable]}


def after_point(eval_rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(mean KL to the reference, mean reward) of the "after" evaluation samples, when they carry KLs."""
    rows = [r for g in phase_groups(eval_rows, "after") for r in g]
    if not rows or not all(finite(r.get("kl")) for r in rows):
        return None
    return sum(r["kl"] for r in rows) / len(rows), sum(r["reward"] for r in rows) / len(rows)


def reward_at_kl(curve: list[list[float]], kl: float) -> float | None:
    """The curve's reward at ``kl``, linearly interpolated between its points; None outside its range."""
    points = sorted(curve)
    for (k0, r0), (k1, r1) in zip(points, points[1:], strict=False):
        if k0 <= kl <= k1:
            return r0 if k1 == k0 else r0 + (r1 - r0) * (kl - k0) / (k1 - k0)
    return None


def plot_frontier(ax: Any, rows: list[dict[str, Any]], curves: Curves,
                  after: tuple[float, float] | None = None) -> None:
    """Draw the frontier panel on a matplotlib axis; ``after`` is the trained policy's evaluation point."""
    if "optimal" in curves:
        kl, reward = zip(*curves["optimal"], strict=True)
        ax.plot(kl, reward, color="black", linewidth=2, label="optimum pi*_beta (exact)")
    if curves.get("optimum_is"):
        kl, reward = zip(*curves["optimum_is"], strict=True)
        ax.plot(kl, reward, color="black", linestyle="--", linewidth=1.5,
                label="optimum pi*_beta (IS estimate, pi0 samples)")
    if curves.get("best_of_n"):
        kl, reward = zip(*curves["best_of_n"], strict=True)
        source = "exact" if "optimal" in curves else "KL bound, pi0 samples"
        ax.plot(kl, reward, color="tab:green", marker="s", markersize=4, label=f"best-of-n ({source})")
    kls, rewards, source = trajectory(rows)
    if kls:
        ax.plot(kls, rewards, color="tab:blue", marker=".", markersize=3, linewidth=1,
                label=f"this run, training prompts ({source})" if after else f"this run ({source})")
        ax.plot(kls[-1:], rewards[-1:], color="tab:red", marker="*", markersize=10, linestyle="none",
                label="final")
    if after is not None:
        ax.plot([after[0]], [after[1]], color="tab:orange", marker="D", markersize=8, linestyle="none",
                label="after training, evaluation prompts")
    shown = kls + [kl for kl, _ in curves.get("best_of_n", [])] + ([after[0]] if after else [])
    if "optimal" in curves and shown:
        ax.set_xlim(-0.05 * max(shown), 1.3 * max(shown))  # the optimum runs on to huge KLs; show our range
        top = [r for kl, r in curves["optimal"] if kl <= 1.3 * max(shown)]
        ax.set_ylim(top=max(top + rewards) + 0.05)
    ax.set_title("Reward vs KL(pi || pi0)")
    ax.set_xlabel("KL to the reference (nats)")
    ax.set_ylabel("reward")
    ax.grid(True, alpha=0.3)
    if kls or curves or after:
        ax.legend(loc="best", fontsize="small")
