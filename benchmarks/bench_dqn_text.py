"""DQN on CartPole in words (``langrl/CartPole-Text-v0``) through the frozen LM encoder, against DQN on the
numbers, at the same budget and settings (the RL Zoo's CartPole DQN), in one run.

The text agent is ``configs/dqn_cartpole_text.yaml`` (the embedded SmolLM2-135M, first 16 of 30 decoder
blocks, mean-pooled and standardised features, an MLP head); the numeric peer is ``configs/dqn_cartpole.yaml``.
Both run through ``langrl.train`` (``kind: dqn``) with the same seed, steps and evaluation protocol: every
``--eval-every`` steps the greedy policy plays ``--eval-episodes`` episodes and the best network is kept; at
the end the final and the best network play ``--test-episodes`` episodes from seeds that took no part in the
choice. The figure to compare with is PPO on the same text through the same encoder: 433.3 over 20 episodes
at 30,208 steps, one seed (benchmarks/RESULTS_agents.md; measured on another day, not in this run).

    python benchmarks/bench_dqn_text.py --num-envs 8 --steps 30000 --eval-every 5000  # 45 min on 2 CPU cores
    python benchmarks/bench_dqn_text.py --steps 50000 --json dqn_text.json           # the Zoo's budget: hours
    python benchmarks/bench_dqn_text.py --steps 1500 --learning-starts 500 --eval-every 500 \\
        --eval-episodes 2 --test-episodes 2                                            # plumbing, minutes

The cost is the LM: one backbone pass per distinct observation (``encoder/cache_misses``), batched over
the environments and the evaluation episodes; replayed transitions are read from the feature cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PPO_TEXT = {"steps": 30_208, "return": 433.3, "source": "benchmarks/RESULTS_agents.md, PPO, LMEncoder(layers=16)"}


def run(config: str, output: Path, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Train one agent through ``langrl.train``; return its figures."""
    import langrl

    overrides = [f"steps={args.steps}", f"seed={args.seed}", f"dqn.learning_starts={args.learning_starts}",
                 f"eval.every={args.eval_every}", f"eval.episodes={args.eval_episodes}",
                 f"eval.test_episodes={args.test_episodes}", f"threads={args.threads}", f"env.num_envs={args.num_envs}",
                 "log.progress=false", *extra]
    t0 = time.perf_counter()
    result = langrl.train(str(ROOT / config), output=output, overrides=overrides)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    last = {k: v for r in rows for k, v in r.items()}  # the latest value of every key
    m = result.metrics
    return {"config": config, "overrides": overrides, "wall_s": round(wall, 1), "train_s": last.get("time/elapsed_s"),
            "final_test_return": m.get("final/mean_return"), "best_test_return": m.get("best/mean_return"),
            "best_chosen_at": m.get("best/env_steps"), "best_eval_return": m.get("best/eval_mean_return"),
            "curve": result.summary["evaluations"], "test_episodes": m.get("final/episodes"),
            "env_step_s_median": statistics.median(r["time/env_step_s"] for r in rows if "time/env_step_s" in r),
            "lm_encodes": last.get("encoder/cache_misses"), "cache_hits": last.get("encoder/cache_hits")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-starts", type=int, default=1_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--test-episodes", type=int, default=20)
    parser.add_argument("--layers", type=int, default=16, help="LM decoder blocks the encoder runs")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="auto", help="the text agent's device (auto: CUDA when present)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--num-envs", type=int, default=1,
                        help="environments side by side, both agents (8 batches the text agent's LM passes by 8; "
                             "train_freq stays in environment steps)")
    parser.add_argument("--agents", default="numeric,text", help="comma-separated: numeric, text")
    parser.add_argument("--runs", type=Path, default=None, help="keep the run folders here (default: temporary)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = {"numeric": ("configs/dqn_cartpole.yaml", []),
               "text": ("configs/dqn_cartpole_text.yaml", [f"network.layers={args.layers}", f"model={args.model}",
                                                           f"device={args.device}"])}
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.runs or Path(scratch)
        for name in args.agents.split(","):
            config, extra = configs[name]
            results[name] = run(config, folder / name, args, extra)
            print(json.dumps({"agent": name, **results[name]}), flush=True)
    print(f"\n{'agent':8s} {'final':>7s} {'best':>7s} {'chosen at':>9s} {'train s':>8s} {'s/step':>7s} "
          f"{'LM encodes':>10s}")
    for name, r in results.items():
        print(f"{name:8s} {r['final_test_return']:7.1f} {r['best_test_return'] or float('nan'):7.1f} "
              f"{r['best_chosen_at'] or 0:9.0f} {r['train_s']:8.0f} {r['env_step_s_median']:7.4f} "
              f"{r['lm_encodes'] or 0:10.0f}")
    print(f"reference, not measured in this run: PPO on the same text and encoder, {PPO_TEXT['return']} at "
          f"{PPO_TEXT['steps']} steps ({PPO_TEXT['source']})")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "ppo_text": PPO_TEXT,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
