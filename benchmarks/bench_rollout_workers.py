"""Steps per second against the number of Ray rollout workers, and where each step's time goes.

The same GRPO run of the embedded SmolLM2-135M-Instruct (VADER reward, 4 topics x 4 completions of up to
32 tokens a step) is trained with its samples drawn in the learner's process, by 1 rollout worker and by 2,
for full fine-tuning (the embeddings frozen, as the demo) and for LoRA (r = 16). Per layout it prints the
median over the steps after ``--warmup`` of: seconds per step, the wall time of the rollout (publishing the
weights, sampling and scoring in the workers, bringing the shards back), the publish alone, the CPU-seconds
of sampling and of scoring summed over shards, the reference pass and the update (both in the learner);
then the throughput relative to the in-process layout.

    python benchmarks/bench_rollout_workers.py                 # both modes, 0/1/2 workers, 6 steps each
    python benchmarks/bench_rollout_workers.py --modes lora --steps 4 --json workers.json

Each layout runs in its own subprocess (its own Ray, started and stopped by the run). Learner and workers
share this machine's cores: the figures say what the worker machinery costs and gains here, not what more
machines would give (docs/scaling.md works that out on paper).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PARTS = ("time/step_s", "time/rollout_s", "time/sync_s", "time/sample_s", "time/reward_s", "time/reference_s",
         "time/update_s", "samples/per_s")
MODES = {"full": ["train.freeze=[embed_tokens]"], "lora": ["lora.r=16", "lora.alpha=32", "optim.lr=1e-4"]}


def overrides(mode: str, workers: int, steps: int, seed: int) -> list[str]:
    base = [f"steps={steps}", f"seed={seed}", "prompts.per_step=4", "sampling.group_size=4",
            "sampling.max_new_tokens=32", "prompts.eval_count=0", "bayes.estimates=false",
            "log.checkpoint_every=1000", "log.progress=false", "train.micro_batch_size=16"]
    layout = [f"distributed.rollout_workers={workers}"] if workers else []
    return base + MODES[mode] + layout


def run_layout(mode: str, workers: int, steps: int, seed: int) -> list[dict[str, Any]]:
    """Train in a subprocess; return its metrics rows."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "langrl.cli", "train", "configs/positive_sentiment.yaml", "--output", str(out)]
        for item in overrides(mode, workers, steps, seed):
            cmd += ["--set", item]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def medians(rows: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    kept = rows[warmup:] or rows
    return {k: statistics.median(r.get(k, 0.0) for r in kept) for k in PARTS}


def table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    head = ("| mode | workers | s/step | rollout | publish | sample (CPU-s) | reward (CPU-s) | reference | "
            "update | samples/s | vs in-process |")
    lines = [head, "|" + " --- |" * 11]
    for mode, layouts in results.items():
        base = layouts[0]["samples/per_s"]
        for workers, m in layouts.items():
            cells = [f"{m[k]:.2f}" for k in PARTS[:-1]] + [f"{m['samples/per_s']:.2f}",
                                                           f"{m['samples/per_s'] / base:.2f}x"]
            lines.append(f"| {mode} | {workers or 'in-process'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="full,lora", help=f"comma list of {list(MODES)}")
    parser.add_argument("--workers", default="0,1,2", help="comma list; 0 samples in the learner")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, dict[int, dict[str, float]]] = {}
    for mode in args.modes.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            rows = run_layout(mode, workers, args.steps, args.seed)
            results.setdefault(mode, {})[workers] = medians(rows, args.warmup)
            print(f"{mode} {workers} workers: {results[mode][workers]['time/step_s']:.2f} s/step", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; medians over steps "
          f"{args.warmup + 1}-{args.steps}\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "args": vars(args) | {"json": str(args.json)}},
                                        indent=2))


if __name__ == "__main__":
    main()
