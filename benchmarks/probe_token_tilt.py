"""Probe: the demo trained by one-step tilt distillation instead of GRPO (an experiment, not a langrl algorithm).

    python benchmarks/probe_token_tilt.py --beta 0.3 [--top-k 32] [--steps 70] [--lr 1e-5] [--seed 0] [--out F]

At every state s_t the policy visits, the target is q(v | s_t) = pi0(v | s_t) exp(dr(v) / beta) / Z, where
dr(v) is the VADER reward the text gains by appending token v (computed for pi0's top-k tokens, 0 for the
rest), and the loss is the policy's cross-entropy against q: a dense, full-vocabulary target at each state,
with no sampled reward in the gradient. It is myopic: an opening that leads to a positive word later earns
nothing. Prompts, their order, sampling (4 topics x 8 completions, 16 tokens), the optimiser (AdamW, 5 warm-up
steps, tied embeddings frozen) and the held-out topics are the demo's (configs/positive_sentiment.yaml).
Prints per-step reward and kl/ref, the first-10 -> last-10 means, and the held-out reward before and after
(12 samples per topic, KL after). docs/demo_tuning.md compares it with the GRPO runs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from langrl.config.lm import load_config
from langrl.envs.prompts import build_prompt_sets, left_pad
from langrl.models.forward import completion_logits
from langrl.models.loading import load_lm
from langrl.rewards.vader import VaderReward
from langrl.rollout.tokens import SamplingConfig, TokenRollout, sample
from langrl.run.optim import freeze

CONFIG = "configs/positive_sentiment.yaml"


class Probe:
    def __init__(self, seed: int, lr: float) -> None:
        self.cfg = load_config(CONFIG, [f"seed={seed}"])
        self.ref, self.policy = load_lm(self.cfg.model, device="cpu"), load_lm(self.cfg.model, device="cpu")
        self.tok = self.policy.tokenizer
        self.ref.model.requires_grad_(False)
        freeze(self.policy.model, ["embed_tokens"])
        self.params = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)
        self.train, self.held_out = build_prompt_sets(self.cfg.prompts, self.tok, seed)
        self.vader = VaderReward()
        self.seed = seed

    def reward(self, texts: list[str]) -> list[float]:
        return self.vader([""] * len(texts), texts)

    def rollout(self, prompt_ids: list[list[int]], group: int, generator: torch.Generator) -> TokenRollout:
        ids, mask = left_pad(prompt_ids, self.tok.pad_token_id, torch.device("cpu"))
        config = SamplingConfig(self.cfg.sampling.max_new_tokens, 1.0, 1.0, 0, group)
        return sample(self.policy.model, ids, mask, config, self.tok.eos_token_id, self.tok.pad_token_id, generator)

    def texts(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=True))

    def completions(self, ro: TokenRollout) -> list[str]:
        return [self.texts(r[:int(m)]) for r, m in zip(ro.completion_ids.tolist(), ro.completion_mask.sum(-1).tolist(),
                                                       strict=True)]

    def ref_logprobs(self, ro: TokenRollout) -> torch.Tensor:
        """(B, T, V) log pi0 at every completion position."""
        x = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
        a = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
        with torch.no_grad():  # not inference_mode: the target built from it is saved for backward
            return completion_logits(self.ref.model, x, a, ro.completion_ids.size(1)).float().log_softmax(-1)

    def seq_kl(self, ro: TokenRollout, ref_lp: torch.Tensor) -> torch.Tensor:
        ref = ref_lp.gather(-1, ro.completion_ids[..., None])[..., 0]
        return ((ro.logprobs - ref) * ro.completion_mask).sum(-1)

    def evaluate(self) -> tuple[float, float]:
        """Mean reward and KL of 12 samples per held-out topic, on a generator of their own."""
        ro = self.rollout(self.held_out.ids, 12, torch.Generator().manual_seed(self.seed + 1))
        rewards = self.reward(self.completions(ro))
        return sum(rewards) / len(rewards), float(self.seq_kl(ro, self.ref_logprobs(ro)).mean())

    def target(self, ro: TokenRollout, ref_lp: torch.Tensor, beta: float, k: int) -> torch.Tensor:
        """(B, T, V) q = pi0 exp(dr / beta) / Z, dr the reward gained by appending each of pi0's top-k tokens."""
        top = ref_lp.topk(k, -1).indices
        gained = torch.zeros(top.shape)
        ids, tops = ro.completion_ids.tolist(), top.tolist()
        for b, length in enumerate(ro.completion_mask.sum(-1).tolist()):
            for t in range(int(length)):
                before = self.reward([self.texts(ids[b][:t])])[0]
                after = self.reward([self.texts(ids[b][:t] + [v]) for v in tops[b][t]])
                gained[b, t] = torch.tensor(after) - before
        return ref_lp.scatter_add(-1, top, gained / beta).softmax(-1)

    def step(self, step: int, beta: float, k: int, lr: float, generator: torch.Generator) -> dict[str, float]:
        started = time.monotonic()
        for group in self.opt.param_groups:
            group["lr"] = lr * min(1.0, step / 5)
        ro = self.rollout([self.train.ids[i] for i in self.train.for_step(step - 1)], 8, generator)
        rewards = self.reward(self.completions(ro))
        ref_lp = self.ref_logprobs(ro)
        q = self.target(ro, ref_lp, beta, k)
        x = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
        a = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
        mask, width, rows = ro.completion_mask.float(), ro.completion_ids.size(1), x.size(0)
        self.policy.model.train()
        self.opt.zero_grad()
        for part in torch.arange(rows).split(16):
            logp = completion_logits(self.policy.model, x[part], a[part], width).float().log_softmax(-1)
            ce = -(q[part] * logp).sum(-1)
            ((ce * mask[part]).sum(-1) / mask[part].sum(-1).clamp(min=1)).sum().div(rows).backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.policy.model.eval()
        return {"step": step, "reward/mean": sum(rewards) / len(rewards),
                "kl/ref": float(self.seq_kl(ro, ref_lp).mean()), "time/step_s": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beta", type=float, required=True)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="metrics JSONL")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    probe = Probe(args.seed, args.lr)
    before = probe.evaluate()
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for step in range(1, args.steps + 1):
        rows.append(probe.step(step, args.beta, args.top_k, args.lr, generator))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    after = probe.evaluate()
    first = sum(r["reward/mean"] for r in rows[:10]) / min(10, len(rows))
    last = sum(r["reward/mean"] for r in rows[-10:]) / min(10, len(rows))
    kl = sum(r["kl/ref"] for r in rows[-10:]) / min(10, len(rows))
    print(json.dumps({"beta": args.beta, "first10": first, "last10": last, "gain": last - first, "kl_last10": kl,
                      "held_out_before": before[0], "held_out_after": after[0], "held_out_kl": after[1],
                      "held_out_per_sqrt_nat": (after[0] - before[0]) / math.sqrt(after[1]) if after[1] > 0 else None}))


if __name__ == "__main__":
    main()
