"""Offline RL on the sentiment task: ILQL vs filtered BC, RWR, the base model and best-of-n at the same KL.

One dataset of the base model's own samples (configs/ilql_sentiment.yaml: 8 completions of each of the 45
training topics, VADER-scored) is written once; each learner trains on the same rows, then decodes the 15
held-out topics. Best-of-n draws ``--bon-samples`` completions of each held-out topic from the base model
and reports the plug-in E[max of n] (`langrl.bayes.empirical_best_of_n_reward`) at the analytic KL
log n - (n - 1) / n (`langrl.bayes.best_of_n_kl_bound`); "best-of-n at the same KL" interpolates that
curve linearly in KL at each learner's measured ``kl/ref``.

    python benchmarks/bench_offline_sentiment.py --steps 60 --out runs/bench_offline

prints a markdown table (commands next to the figures go to benchmarks/RESULTS_offline.md).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import langrl
from langrl.bayes import best_of_n_kl_bound, empirical_best_of_n_reward
from langrl.config import load_any_config
from langrl.envs.prompts import encode, left_pad
from langrl.lm.offline_data import split_prompts, write_dataset
from langrl.lm.offline_decode import completion_texts
from langrl.models import load_lm
from langrl.rewards import build_reward
from langrl.rollout import SamplingConfig, sample
from langrl.run import seeds

CONFIG = "configs/ilql_sentiment.yaml"
NS = (1, 2, 4, 8, 16)


def best_of_n_curve(config_path: str, samples: int, overrides: list[str]) -> list[tuple[int, float, float]]:
    """[(n, KL bound, mean over held-out prompts of the plug-in E[max of n])] from ``samples`` base draws each."""
    cfg = load_any_config(config_path, overrides)
    lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    _, held_out = split_prompts(cfg.prompts, cfg.seed)
    reward = build_reward(cfg.reward)
    sampling = SamplingConfig(max_new_tokens=cfg.decode.max_new_tokens, group_size=samples)
    generator = seeds.generator(cfg.seed, "evaluate", 1)
    per_prompt = []
    ids = encode(held_out, lm.tokenizer, cfg.prompts.chat)
    for start in range(0, len(held_out), 4):
        p_ids, p_mask = left_pad(ids[start:start + 4], lm.tokenizer.pad_token_id, lm.model.device)
        rollout = sample(lm.model, p_ids, p_mask, sampling, lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id,
                         generator)
        texts = completion_texts(lm.tokenizer, rollout.completion_ids, rollout.completion_mask)
        prompts = [p for p in held_out[start:start + 4] for _ in range(samples)]
        per_prompt += torch.tensor(reward(prompts, texts)).reshape(-1, samples).unbind(0)
    return [(n, best_of_n_kl_bound(n), sum(empirical_best_of_n_reward(r, n) for r in per_prompt) / len(per_prompt))
            for n in NS if n <= samples]


def at_kl(curve: list[tuple[int, float, float]], kl: float) -> float:
    """The best-of-n reward at ``kl``, linear between the curve's points (NaN beyond its last)."""
    if kl <= curve[0][1]:
        return curve[0][2]
    for (_, k0, r0), (_, k1, r1) in zip(curve, curve[1:], strict=False):
        if k0 <= kl <= k1:
            return r0 + (r1 - r0) * (kl - k0) / (k1 - k0)
    return math.nan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="runs/bench_offline")
    parser.add_argument("--betas", default="1,4", help="ILQL decoding betas to evaluate")
    parser.add_argument("--bon-samples", type=int, default=16)
    parser.add_argument("--num-prompts", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--per-prompt", type=int, default=8, help="dataset completions per training topic")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every run, e.g. --set model=tiny to check the script")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"threads={args.threads}", "log.progress=false", f"dataset.generate.per_prompt={args.per_prompt}",
              *args.overrides]
    t0 = time.perf_counter()
    data = out / "dataset.jsonl"
    if not data.exists():
        write_dataset(load_any_config(CONFIG, common), data)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data_reward = sum(r["reward"] for r in rows) / len(rows)
    print(f"dataset: {len(rows)} rows, mean reward {data_reward:.3f} ({time.perf_counter() - t0:.0f} s)")
    from_file = [f"threads={args.threads}", "log.progress=false", *args.overrides, "dataset.generate=null",
                 f"dataset.path={data.resolve()}", f"steps={args.steps}", f"log.checkpoint_every={args.steps}"]
    results: list[tuple[str, dict]] = []
    base_model = load_any_config(CONFIG, from_file).model
    base = langrl.evaluate(CONFIG, base_model, overrides=from_file, num_prompts=args.num_prompts)
    results.append(("base model", base))
    for algorithm in ("ilql", "filtered_bc", "rwr"):
        run_dir = out / algorithm
        t = time.perf_counter()
        if not (run_dir / "checkpoints").exists():
            langrl.train(CONFIG, output=run_dir, overrides=[*from_file, f"algorithm={algorithm}"])
        print(f"{algorithm}: trained in {time.perf_counter() - t:.0f} s")
        betas = [float(b) for b in args.betas.split(",")] if algorithm == "ilql" else [None]
        for beta in betas:
            extra = [f"decode.beta={beta}"] if beta is not None else []
            result = langrl.evaluate(CONFIG, str(run_dir), overrides=[*from_file, *extra],
                                     num_prompts=args.num_prompts)
            results.append((f"{algorithm}" + (f" (beta {beta:g})" if beta is not None else ""), result))
    curve = best_of_n_curve(CONFIG, args.bon_samples, common)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; dataset mean reward {data_reward:.3f}\n")
    print("| policy | kl/ref (nats) | reward/mean (held-out) | best-of-n at that KL |")
    print("|---|---|---|---|")
    for name, r in results:
        stderr = r["reward/std"] / math.sqrt(r["completions"])
        bon = at_kl(curve, r["kl/ref"])
        print(f"| {name} | {r['kl/ref']:.3f} | {r['reward/mean']:.3f} ± {stderr:.3f} | {bon:.3f} |")
    print("\n| best-of-n | KL bound (nats) | reward/mean |\n|---|---|---|")
    for n, kl, reward in curve:
        print(f"| {n} | {kl:.3f} | {reward:.3f} |")


if __name__ == "__main__":
    main()
