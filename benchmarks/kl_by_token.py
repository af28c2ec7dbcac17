"""Where a trained LM run's KL to its reference goes: by position and by token.

    python benchmarks/kl_by_token.py RUN_DIR [--checkpoint step-70] [--per-prompt 8] [--top 20] [--seed 0]

Samples the run's checkpoint (the newest by default) on the run's evaluation prompts (the held-out ones when
the run holds some out) with the run's sampling settings, scores every sampled token under the checkpoint and
under the run's reference model, and prints: the mean KL per sequence (the sum of the log-ratios
log pi - log pi0 over a completion, the `k1` estimate `kl/ref` logs), its mean by position, and the tokens
whose log-ratios add up to the most KL per sequence. docs/demo_tuning.md quotes it on the demo's run.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch

from langrl.config.lm import load_config
from langrl.envs.prompts import build_prompt_sets, left_pad
from langrl.models.forward import completion_logits, token_logprobs
from langrl.models.loading import load_lm
from langrl.rollout.tokens import SamplingConfig, sample
from langrl.run.checkpoint import list_checkpoints


def log_ratios(run_dir: Path, checkpoint: str | None, per_prompt: int,
               seed: int) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """(B, T) log pi - log pi0 of the checkpoint's own samples, (B, T) their mask, and the tokens' texts."""
    cfg = load_config(run_dir / "config.yaml")
    folder = run_dir / "checkpoints" / checkpoint if checkpoint else list_checkpoints(run_dir)[-1]
    reference, policy = load_lm(cfg.model, device="cpu"), load_lm(str(folder), device="cpu")
    tok = policy.tokenizer
    prompts = build_prompt_sets(cfg.prompts, tok, cfg.seed)[1]
    ids, mask = left_pad(prompts.ids, tok.pad_token_id, torch.device("cpu"))
    s = cfg.sampling
    config = SamplingConfig(s.max_new_tokens, s.temperature, s.top_p, s.top_k, per_prompt)
    rollout = sample(policy.model, ids, mask, config, tok.eos_token_id, tok.pad_token_id,
                     torch.Generator().manual_seed(seed))
    input_ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
    attention = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)
    width = rollout.completion_ids.size(1)
    with torch.inference_mode():
        ref = token_logprobs(completion_logits(reference.model, input_ids, attention, width, s.temperature),
                             rollout.completion_ids)
    completion_mask = rollout.completion_mask.float()
    texts = [[str(tok.decode(t)) for t in row] for row in rollout.completion_ids.tolist()]
    return (rollout.logprobs - ref) * completion_mask, completion_mask, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default=None, help="a folder under RUN_DIR/checkpoints (default: newest)")
    parser.add_argument("--per-prompt", type=int, default=8, help="completions per evaluation prompt")
    parser.add_argument("--top", type=int, default=20, help="tokens to list")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ratio, mask, texts = log_ratios(args.run_dir, args.checkpoint, args.per_prompt, args.seed)
    n = ratio.size(0)
    per_position = ratio.sum(0) / n
    print(f"{n} completions; KL per sequence {float(ratio.sum()) / n:.3f} nats")
    print("by position:", " ".join(f"{float(x):.3f}" for x in per_position))
    by_token: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for row, kept, words in zip(ratio.tolist(), mask.tolist(), texts, strict=True):
        for value, real, word in zip(row, kept, words, strict=True):
            if real:
                by_token[word.strip()] += value
                count[word.strip()] += 1
    print(f"{'token':>16}  KL per sequence  count  mean log-ratio")
    for word, total in by_token.most_common(args.top):
        print(f"{word!r:>16}  {total / n:15.3f}  {count[word]:5d}  {total / count[word]:14.2f}")


if __name__ == "__main__":
    main()
