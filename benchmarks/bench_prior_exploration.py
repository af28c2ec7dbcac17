"""Does the LM exploration prior find the first success sooner than uniform exploration? (BabyAI text)

Pure exploration, no learning: each arm acts by sampling an action, uniformly (``uniform``) or from
`LMActionPrior` (``prior``: the default prompt; ``prior_hint``: a prompt that also says how GoTo
missions are solved; ``*_calibrated``: the same with ``calibrate=True``, the action scores less those
after a content-free "N/A" observation; ``*_plain``: no chat template, each action scored after a
space following "Your next action:"), and plays episodes one after another until the first step
with a positive reward.
The figure is the number of environment steps up to and including that step, capped at ``--max-steps``
(a capped seed counts as ``max_steps``: a censored value, reported as such). Per seed ``s`` every arm
plays the same sequence of episodes (episode ``k`` is reset with seed ``1000 s + k``), so seeds are
paired; the comparison reports how many seeds the prior wins, an exact two-sided sign test and the mean
of the per-seed log-ratio of steps.

    OMP_NUM_THREADS=1 python benchmarks/bench_prior_exploration.py --level GoToLocal --seeds 10
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from langrl.agents import LMActionPrior
from langrl.agents.prior import PRIOR_TEMPLATE
from langrl.envs.text import BABYAI_ACTIONS, BabyAIText
from langrl.models import load_lm

HINT_TEMPLATE = (
    "You are an agent in a grid world. To go to an object, turn until the object is forward, then go "
    "forward until it is 1 step forward. Possible actions: {actions}.\n{observation}\nYour next action:"
)
# arm -> (template, calibrate, chat)
ARMS = {"prior": (PRIOR_TEMPLATE, False, True), "prior_hint": (HINT_TEMPLATE, False, True),
        "prior_calibrated": (PRIOR_TEMPLATE, True, True),
        "prior_hint_calibrated": (HINT_TEMPLATE, True, True),
        "prior_plain": (PRIOR_TEMPLATE, False, False), "prior_hint_plain": (HINT_TEMPLATE, False, False)}


def steps_to_first_success(env: BabyAIText, choose: Callable[[str], int], seed: int, max_steps: int
                           ) -> tuple[int, int, bool]:
    """(steps, episodes, found) of one exploration run; ``steps`` counts the successful step."""
    steps, episode = 0, 0
    while steps < max_steps:
        obs, _ = env.reset(seed=1000 * seed + episode)
        episode += 1
        while steps < max_steps:
            obs, reward, terminated, truncated, _ = env.step(choose(obs))
            steps += 1
            if reward > 0:
                return steps, episode, True
            if terminated or truncated:
                break
    return steps, episode, False


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p-value of ``wins`` against ``losses`` under p = 1/2 (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def run_arm(arm: str, level: str, seeds: list[int], max_steps: int, prior: LMActionPrior | None
            ) -> dict[str, Any]:
    env = BabyAIText(f"BabyAI-{level}-v0")
    per_seed = []
    start, cpu = time.perf_counter(), time.process_time()
    marginal = np.zeros(len(BABYAI_ACTIONS))
    for seed in seeds:
        rng = np.random.default_rng(seed)
        if prior is None:
            def choose(obs: str, rng: np.random.Generator = rng) -> int:
                return int(rng.integers(len(BABYAI_ACTIONS)))
        else:
            def choose(obs: str, rng: np.random.Generator = rng) -> int:
                p = prior.probs([obs])[0]
                marginal[:] += p
                return int(rng.choice(len(p), p=p / p.sum()))
        steps, episodes, found = steps_to_first_success(env, choose, seed, max_steps)
        per_seed.append({"seed": seed, "steps": steps, "episodes": episodes, "found": found})
        print(json.dumps({"arm": arm, **per_seed[-1]}), flush=True)
    steps = np.array([r["steps"] for r in per_seed])
    out: dict[str, Any] = {
        "arm": arm, "level": level, "seeds": len(seeds), "max_steps": max_steps,
        "found": int(sum(r["found"] for r in per_seed)), "steps_mean": float(steps.mean()),
        "steps_median": float(np.median(steps)), "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(time.process_time() - cpu, 1), "per_seed": per_seed}
    if prior is not None:
        out["prior_cache_misses"] = prior.cache.misses
        shares = (marginal / marginal.sum()).round(3).tolist()
        out["prior_action_marginal"] = dict(zip(BABYAI_ACTIONS, shares, strict=True))
    return out


def compare(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    a = np.array([r["steps"] for r in base["per_seed"]], dtype=float)
    b = np.array([r["steps"] for r in other["per_seed"]], dtype=float)
    wins, losses = int((b < a).sum()), int((b > a).sum())
    log_ratio = np.log(b / a)
    return {"arm": other["arm"], "vs": base["arm"], "wins": wins, "losses": losses,
            "ties": int((a == b).sum()),
            "sign_test_p": round(sign_test(wins, losses), 4),
            "mean_log_ratio": float(log_ratio.mean()),
            "geometric_mean_ratio": float(np.exp(log_ratio.mean())),
            "log_ratio_se": float(log_ratio.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="GoToLocal")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--arms", default="uniform,prior", help="comma-separated: uniform or a key of ARMS")
    parser.add_argument("--lm", default="smollm2-135m-instruct")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    lm = None
    results = []
    for arm in args.arms.split(","):
        prior = None
        if arm != "uniform":
            lm = lm or load_lm(args.lm, device="cpu")
            template, calibrate, chat = ARMS[arm]
            prior = LMActionPrior(lm, BABYAI_ACTIONS, template=template, calibrate=calibrate, chat=chat)
        result = run_arm(arm, args.level, seeds, args.max_steps, prior)
        print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}), flush=True)
        results.append(result)
    comparisons = [compare(results[0], r) for r in results[1:]]
    for c in comparisons:
        print(json.dumps(c), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "prior_exploration", "args": vars(args), "results": results,
                       "comparisons": comparisons}, f, indent=2)


if __name__ == "__main__":
    main()
