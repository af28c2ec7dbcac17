"""Accuracy of an LM world model of BabyAI GoToLocal text against the number of training transitions.

One ``kind: world_model`` run (configs/world_model_babyai.yaml) per size, through `langrl.train`, each on the
first N transitions (``data.limit``) of one dataset collected once from the bot with epsilon 0.3 (so the sizes
are nested subsets), each scored on the same held-out transitions (seeds from ``data.eval_seed_start``) at its
last step. One JSON line per size: the held-out one-step accuracy (next observation exact and line F1,
reward, success, done), the held-out loss, and the training wall time (the run's, evaluation included).
The first line is the peer measured in the same run: the model that predicts no change (next observation =
the current one, reward 0, not done), whose exact-observation score is the share of steps that change nothing.

    OMP_NUM_THREADS=2 python benchmarks/bench_world_model.py --sizes 250 1000 4000 --model small --steps 2000
    python benchmarks/bench_world_model.py --sizes 250 1000 4000 --model smollm2-135m-instruct --steps 1000 \
        --set lora.r=16 --set optim.lr=3e-4 --set max_new_tokens=320

``--set KEY=VALUE`` (repeatable) applies to every run, e.g. ``--set eval.transitions=100``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import langrl
from langrl.config import load_any_config
from langrl.config.world_model import WorldModelConfig
from langrl.planning.lm_world_model import one_step_accuracy
from langrl.planning.transitions import Transition, collect_transitions, write_transitions
from langrl.run.io import read_jsonl

CONFIG = "configs/world_model_babyai.yaml"
CHUNK = 50  # episodes collected at a time until the largest size is reached


class NoChange:
    """The peer: nothing changes, no reward, the episode goes on."""

    def step(self, state: str, action: str) -> tuple[str, float, bool]:
        return state, 0.0, False


def training_data(cfg: WorldModelConfig, size: int) -> list[Transition]:
    """At least ``size`` transitions from consecutive seeds from ``data.seed_start``, in whole episodes."""
    d, out, episodes = cfg.data, [], 0
    while len(out) < size:
        out += collect_transitions(d.env_id, d.env_kwargs, CHUNK, d.seed_start + episodes, d.policy, d.max_steps,
                                   d.epsilon)
        episodes += CHUNK
    if d.seed_start + episodes > d.eval_seed_start >= d.seed_start:
        raise SystemExit(f"{size} transitions need seeds up to {d.seed_start + episodes - 1}, past "
                         f"data.eval_seed_start = {d.eval_seed_start}: raise it with --set")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000], help="training transitions")
    parser.add_argument("--model", default="small", help="small, smollm2-135m-instruct, tiny, a folder")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default="runs/bench_world_model")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every run, e.g. --set eval.transitions=100")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"model={args.model}", f"steps={args.steps}", f"log.checkpoint_every={args.steps}",
              "log.progress=false", *args.overrides]
    cfg = load_any_config(CONFIG, common)
    assert isinstance(cfg, WorldModelConfig)
    t0 = time.perf_counter()
    train_file, eval_file = out / "transitions.jsonl", out / "eval_transitions.jsonl"
    write_transitions(train_file, training_data(cfg, max(args.sizes)))
    d = cfg.data
    held_out = collect_transitions(d.env_id, d.env_kwargs, d.eval_episodes, d.eval_seed_start, d.policy, d.max_steps,
                                   d.epsilon)
    write_transitions(eval_file, held_out)
    print(f"data: {len(read_jsonl(train_file))} training and {len(held_out)} held-out transitions "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    scored = held_out[:cfg.eval.transitions]
    print(json.dumps({"model": "no change (peer)", "size": 0, **one_step_accuracy(NoChange(), scored)}), flush=True)
    files = [f"data.file={train_file.resolve()}", f"data.eval_file={eval_file.resolve()}"]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.model)
    for size in sorted(args.sizes):
        t = time.perf_counter()
        result = langrl.train(CONFIG, output=out / f"{slug}-n{size}-s{args.steps}",
                              overrides=[*common, *files, f"data.limit={size}"])
        seconds = time.perf_counter() - t
        rows = read_jsonl(result.run_dir / "metrics.jsonl")
        step_s = [r["time/step_s"] for r in rows if "time/step_s" in r]
        m = result.metrics
        print(json.dumps({"model": args.model, "size": size, "steps": args.steps,
                          **{k: m[f"eval/{k}"] for k in ("obs_exact", "obs_line_f1", "reward_accuracy",
                                                           "success_accuracy", "done_accuracy", "transitions",
                                                           "loss")},
                          "train_loss": m["loss/sft"], "train_s": round(seconds, 1),
                          "step_s_median": round(statistics.median(step_s), 4), "run": str(result.run_dir)}),
              flush=True)


if __name__ == "__main__":
    main()
