"""Where a langrl GRPO step spends its time: each part on its own, with and without each speed-up.

On the embedded SmolLM2-135M-Instruct, a batch of P prompts x G completions x ``--tokens`` (the
benchmark's default configuration), it times, as medians over ``--reps``:

- sampling (KV cache, prompt shared across the group), per decode step; with LoRA, folded vs unfolded;
- the reference pass under ``inference_mode``, packed (prompt once per group) vs every row in full;
- the update's forward + backward, packed vs every row in full;
- chosen-token log-probs: chunked ``logit - logsumexp`` vs a float32 full-vocabulary log-softmax;
- the entropy statistic, the AdamW step (foreach vs fused), one train_step end to end;

and with ``--profile`` prints the torch.profiler table of one full train_step.

    python benchmarks/profile_step.py [--lora] [--profile] [--json parts.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from langrl.config import load_config
from langrl.envs.prompts import left_pad
from langrl.lm.trainer import build_run, make_batch, run_step
from langrl.models import merged_lora
from langrl.models.forward import completion_forward, token_entropy, token_logprobs
from langrl.rollout import sample

CLOCK = time.perf_counter  # --clock cpu: time.process_time, for a machine shared with other work


def timed(fn: Callable[[], Any], reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return statistics.median(times)


def config(prompts: int, group: int, tokens: int, lora: bool) -> dict[str, Any]:
    return {
        "model": "smollm2-135m-instruct", "algorithm": "grpo", "steps": 100, "device": "cpu",
        "dtype": "float32",
        "prompts": {"file": "topics.txt", "template": "Write one sentence about {item}.", "per_step": prompts,
                    "eval_count": 0},
        "sampling": {"max_new_tokens": tokens, "group_size": group},
        "reward": {"type": "vader"},
        "kl": {"coef": 0.04, "estimator": "k3", "mode": "loss"},
        "lora": {"r": 16, "alpha": 32} if lora else None,
        "optim": {"lr": 1e-5 if not lora else 1e-4},
        "train": {"micro_batch_size": prompts * group, "loss_aggregation": "token_mean"},
        "log": {"progress": False, "tensorboard": False},
    }


def measure(args: argparse.Namespace) -> dict[str, float]:
    run = build_run(load_config(config(args.prompts, args.group, args.tokens, args.lora)))
    policy, tok, reps = run.policy, run.tokenizer, args.reps
    ids, mask = left_pad([run.task.prompts.ids[i] for i in range(args.prompts)], tok.pad_token_id,
                         torch.device("cpu"))
    # A batch whose completions run the full length (EOS suppressed): what every pass below sees.
    eos = tok.eos_token_id if args.eos else []
    gen = torch.Generator().manual_seed(0)
    out: dict[str, float] = {"prompt_tokens": float(mask.sum(-1).float().mean()),
                             "threads": float(torch.get_num_threads())}

    def draw(model: torch.nn.Module) -> Any:
        return sample(model, ids, mask, run.sampling, eos, tok.pad_token_id, gen)

    with merged_lora(policy) as snapshot:
        rollout = draw(snapshot)
        out["sample_s"] = timed(lambda: draw(snapshot), reps)
    tc = rollout.completion_ids.size(1)
    out["completion_tokens"] = float(tc)
    out["decode_step_ms"] = 1000 * out["sample_s"] / tc
    if args.lora:
        out["sample_unfolded_s"] = timed(lambda: draw(policy), reps)

        def fold_unfold() -> None:
            with merged_lora(policy):
                pass

        out["fold_unfold_s"] = timed(fold_unfold, reps)
    full_ids, full_mask = rollout.input_ids, rollout.attention_mask

    def reference(packed: bool) -> None:
        model = run.reference.frozen if run.reference.frozen is not None else policy
        with torch.inference_mode(), policy.disable_adapter() if run.reference.use_adapter else nullcontext():
            completion_forward(model, full_ids, full_mask, tc, packed=packed)

    out["reference_packed_s"] = timed(lambda: reference(True), reps)
    out["reference_plain_s"] = timed(lambda: reference(False), reps)

    def forward_backward(packed: bool,
                         logprobs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        policy.zero_grad(set_to_none=True)
        logits, _ = completion_forward(policy, full_ids, full_mask, tc, packed=packed)
        (logprobs(logits, rollout.completion_ids) * rollout.completion_mask).sum().backward()

    def full_log_softmax(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return logits.float().log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)

    policy.train()
    out["fwd_bwd_packed_s"] = timed(lambda: forward_backward(True, token_logprobs), reps)
    out["fwd_bwd_plain_s"] = timed(lambda: forward_backward(False, token_logprobs), reps)
    out["fwd_bwd_packed_full_log_softmax_s"] = timed(lambda: forward_backward(True, full_log_softmax), reps)
    policy.eval()
    with torch.no_grad():
        logits, _ = completion_forward(policy, full_ids, full_mask, tc)
    out["entropy_s"] = timed(lambda: token_entropy(logits), reps)
    params = [p for p in policy.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    for name, kwargs in {"foreach": {"foreach": True}, "fused": {"fused": True}}.items():
        opt = torch.optim.AdamW(params, lr=1e-12, **kwargs)
        out[f"adamw_{name}_s"] = timed(opt.step, reps)
    del opt
    policy.zero_grad(set_to_none=True)
    rewards = [0.0] * len(rollout.completion_ids)
    out["make_batch_s"] = timed(
        lambda: make_batch(policy, run.reference, rollout, rewards, "k3", run.sampling), reps)
    steps = iter(range(1, 1000))
    out["train_step_s"] = timed(lambda: run_step(run, next(steps)), reps)
    if args.profile:
        profile(run, next(steps))
    return out


def profile(run: Any, step: int) -> None:
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof, record_function("train_step"):
        run_step(run, step)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--eos", action="store_true", help="stop completions at EOS (default: full length)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU seconds (with OMP_NUM_THREADS=1 on a busy machine)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    out = measure(args)
    for key, value in out.items():
        print(f"{key:36s} {value:10.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
