"""The demo's criteria over seeds (docs/demo_tuning.md): `make demo`'s config, one run per seed, and per run

- reward on the training prompts: mean of the first and of the last 10 steps, and the gain;
- kl/ref over the last 10 steps;
- reward on the 20 held-out topics before (the base model) and after training, both from the run's own
  evaluation samples (12 per topic, the same seed and sampling), and the trained model's KL there;
- best-of-n's reward at that KL, from the same "before" samples (n <= 12, KL at its bound), and the gap.

    python benchmarks/bench_demo.py --seeds 0 1 2 [--set key=value ...] [--out runs/bench-demo]

Each run also leaves its folder (report.md, report.png) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import langrl

CONFIG = "configs/positive_sentiment.yaml"


def measure(run_dir: Path) -> dict[str, float | None]:
    """The demo's figures of one finished run, from its folder."""
    from langrl.report.lm import summarise_run

    s = summarise_run(run_dir)
    gain = s["reward_last10"] - s["reward_first10"]
    held_gain = s["eval_reward_after"] - s["eval_reward_before"]
    gap = None if s["best_of_n_at_kl"] is None else s["best_of_n_at_kl"] - s["eval_reward_after"]
    return {"first10": s["reward_first10"], "last10": s["reward_last10"], "gain": gain, "kl_last10": s["kl_last10"],
            "held_out_before": s["eval_reward_before"], "held_out_after": s["eval_reward_after"],
            "held_out_gain": held_gain, "held_out_kl": s["eval_kl_after"], "best_of_n_at_kl": s["best_of_n_at_kl"],
            "gap_to_best_of_n": gap, "step_s_median": s["step_s_median"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/bench-demo")
    parser.add_argument("--measure", nargs="*", default=None, metavar="RUN_DIR",
                        help="only print the figures of finished runs")
    args = parser.parse_args()
    if args.measure is not None:
        for run in args.measure:
            print(json.dumps({"run": run, **measure(Path(run))}), flush=True)
        return
    for seed in args.seeds:
        result = langrl.train(CONFIG, output=Path(args.out) / f"seed-{seed}",
                              overrides=[f"seed={seed}", "log.progress=false", *args.overrides])
        print(json.dumps({"seed": seed, **measure(result.run_dir)}), flush=True)


if __name__ == "__main__":
    main()
