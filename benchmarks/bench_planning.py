"""Planning benchmarks (benchmarks/RESULTS_planning.md).

``dyna``: real completions each learner needs before the exact KL(pi || pi*) first falls below 0.05 on the
toy token MDP of configs/toy_exact.yaml (beta 0.2), per seed, measured in the same run. The seed also builds
the toy LM pi0 (as ``seed`` does in configs/toy_exact.yaml), so seed s is one MDP for all three learners:

- ``dyna``: `SoftDyna` as configs/dyna_toy.yaml (32 completions a step, 5 imagined transitions per real one);
- ``soft_q``: the same with no imagined transitions (model-free soft Q-learning, the peer without a model);
- ``reinforce``: ``langrl train configs/toy_exact.yaml --set algorithm=reinforce`` (256 completions a step),
  stopped by a callback at the first step that logs bayes/kl_to_optimum < 0.05.

``babyai``: ``langrl eval configs/babyai_plan.yaml`` for each planner (MCTS, and BFS as the exhaustive peer)
on the same held-out seeds: success rate, world-model calls and wall time per decision.

    OMP_NUM_THREADS=1 python benchmarks/bench_planning.py dyna --seeds 0 1 2 3 4 --reinforce-seeds 0 1 2 3 4
    python benchmarks/bench_planning.py babyai --episodes 100 --planners mcts bfs [--model uniform]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import torch

import langrl
from langrl.envs.toy import letter_reward, toy_lm
from langrl.planning.dyna import SoftDyna, toy_task
from langrl.run.callbacks import StopAtThreshold

TARGET = 0.05


def dyna_completions(task, seed: int, planning_updates: int, limit: int = 20_000) -> tuple[int | None, float]:
    """(real completions when KL(pi || pi*) < TARGET first, wall seconds); None if not within ``limit``."""
    learner = SoftDyna(task, episodes=32, planning_updates=planning_updates)
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    while learner.stats.real_episodes < limit:
        if learner.step(generator)["exact/kl_to_optimum"] < TARGET:
            return learner.stats.real_episodes, time.perf_counter() - t0
    return None, time.perf_counter() - t0


def reinforce_completions(seed: int, max_steps: int = 400) -> tuple[int | None, float]:
    """REINFORCE on configs/toy_exact.yaml: completions (256 a step) up to the first step below TARGET."""
    stop = StopAtThreshold("bayes/kl_to_optimum", TARGET, mode="min")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = langrl.train("configs/toy_exact.yaml", output=Path(tmp) / "run", callbacks=[stop],
                              overrides=["algorithm=reinforce", f"seed={seed}", f"steps={max_steps}",
                                         "log.progress=false", "log.report_to=[]"])
        rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    below = [r["step"] for r in rows if r.get("bayes/kl_to_optimum", 1.0) < TARGET]
    return (int(below[0]) * 256 if below else None), time.perf_counter() - t0


def bench_dyna(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    for seed in args.seeds:
        task = toy_task(toy_lm(seed=seed), "a", 4, functools.partial(letter_reward, letter="a"), beta=0.2)
        for name, n in (("dyna", 5), ("soft_q", 0)):
            used, seconds = dyna_completions(task, seed, n)
            print(json.dumps({"learner": name, "seed": seed, "completions": used, "seconds": round(seconds, 1)}),
                  flush=True)
    for seed in args.reinforce_seeds:
        used, seconds = reinforce_completions(seed)
        print(json.dumps({"learner": "reinforce", "seed": seed, "completions": used, "seconds": round(seconds, 1)}),
              flush=True)


def bench_babyai(args: argparse.Namespace) -> None:
    for planner in args.planners:
        result = langrl.evaluate("configs/babyai_plan.yaml", args.model, episodes=args.episodes,
                                 overrides=[f"planner.type={planner}", *args.set])
        print(json.dumps({"planner": planner, **{k: v for k, v in result.items() if k != "seeds"}}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    dyna = sub.add_parser("dyna")
    dyna.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    dyna.add_argument("--reinforce-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    babyai = sub.add_parser("babyai")
    babyai.add_argument("--episodes", type=int, default=100)
    babyai.add_argument("--planners", nargs="+", default=["mcts", "bfs"])
    babyai.add_argument("--model", default="uniform")
    babyai.add_argument("--set", nargs="*", default=[], help="extra overrides, e.g. planner.simulations=50")
    args = parser.parse_args()
    bench_dyna(args) if args.which == "dyna" else bench_babyai(args)


if __name__ == "__main__":
    main()
