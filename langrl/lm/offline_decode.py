"""How an offline-trained policy writes, and how it is measured: decoding with advantage-shaped logits,
teacher-forced log-probabilities of given completions, and mean reward with the KL to the base model.

ILQL's policy is pi(a | s) proportional to pi_beta(a | s) exp(beta (Q(s, a) - V(s))) (`langrl.rl.ilql.shaped_logits`),
with Q the minimum of the target heads; filtered BC, RWR and a plain model are the same with no heads.
Temperature divides the shaped logits; greedy decoding puts all mass on their argmax; top-k keeps the k
largest. The KL to the base model is exact per token, KL(pi(.|s_t) || pi0(.|s_t)), summed over the
completion: its expectation along the policy's own samples is the sequence-level KL(pi || pi0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from langrl.envs.prompts import left_pad
from langrl.models.cache import cache_kwargs
from langrl.models.forward import completion_forward, completion_logits
from langrl.models.value import MLPValueHead, QHeads
from langrl.rewards import RewardFn, score
from langrl.rl.ilql import shaped_logits
from langrl.rollout.tokens import draw, filter_logits


@dataclass
class ShapedPolicy:
    """The decoding policy. ``lm`` gives pi_beta (the trained LM with a shared trunk, the frozen base model
    with a separate one); ``critic`` is the trunk under ``q``/``v`` when it is not ``lm``'s. Without heads
    (or with beta = 0) it is ``lm`` itself, at ``temperature``."""

    lm: PreTrainedModel
    q: QHeads | None = None
    v: MLPValueHead | None = None
    critic: PreTrainedModel | None = None
    beta: float = 0.0
    temperature: float = 1.0
    top_k: int = 0
    greedy: bool = False

    @property
    def shaped(self) -> bool:
        return self.q is not None and self.v is not None and self.beta > 0

    def distribution(self, lm_logits: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
        """(..., V) pi_beta's logits and (..., H) the critic trunk's states -> (..., V) log pi(a | s)."""
        logits = lm_logits.float().log_softmax(-1)
        if self.shaped:
            assert self.q is not None and self.v is not None and hidden is not None
            logits = shaped_logits(logits, self.q(hidden).min(0).values, self.v(hidden), self.beta)
        logits = logits / self.temperature
        if self.greedy:
            best = logits.argmax(-1, keepdim=True)
            return torch.full_like(logits, float("-inf")).scatter(-1, best, 0.0)
        if self.top_k:
            flat = filter_logits(logits.reshape(-1, logits.size(-1)), self.top_k, 1.0)
            logits = flat.reshape(logits.shape)
        return logits.log_softmax(-1)

    def logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int) -> torch.Tensor:
        """(B, Tp + Tc) left-padded prompts with right-padded completions -> (B, Tc, V) log pi(. | s_t) at every
        completion position (teacher-forced, one pass)."""
        logits, hidden = completion_forward(self.lm, input_ids, attention_mask, completion_len,
                                            hidden=self.shaped and self.critic is None)
        if self.shaped and self.critic is not None:
            _, hidden = completion_forward(self.critic, input_ids, attention_mask, completion_len, hidden=True)
        return self.distribution(logits, hidden)

    def step(self, models: list[PreTrainedModel], caches: list[DynamicCache], **inputs: Any) -> torch.Tensor:
        """One forward of every model on ``inputs`` with its cache -> (B, V) log pi of the next token."""
        outs = [m(**inputs, **cache_kwargs(m, c), use_cache=True, logits_to_keep=1, output_hidden_states=self.shaped)
                for m, c in zip(models, caches, strict=True)]
        hidden = outs[-1].hidden_states[-1][:, -1] if self.shaped else None
        return self.distribution(outs[0].logits[:, -1], hidden)

    @torch.inference_mode()
    def decode(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
               eos_token_id: int | None, pad_token_id: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Tp) left-padded prompts -> (B, Tc) completion ids (pad after EOS) and mask (1 up to and including
        EOS). A KV cache per model (two with a separate critic trunk)."""
        models = [self.lm] + ([self.critic] if self.shaped and self.critic is not None else [])
        caches = [DynamicCache() for _ in models]
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        logp = self.step(models, caches, input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions)
        mask, next_pos = prompt_mask, positions[:, -1:] + 1
        done = torch.zeros(prompt_ids.size(0), dtype=torch.bool, device=prompt_ids.device)
        tokens, alive = [], []
        for _ in range(max_new_tokens):
            token = draw(logp.exp(), generator).masked_fill(done, pad_token_id)
            tokens.append(token)
            alive.append(~done)
            if eos_token_id is not None:
                done = done | (token == eos_token_id)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logp = self.step(models, caches, input_ids=token[:, None], attention_mask=mask, position_ids=next_pos)
            next_pos = next_pos + 1
        return torch.stack(tokens, 1), torch.stack(alive, 1).to(prompt_mask.dtype)


def completion_texts(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """The text of each completion, cut by its mask, without the EOS that ended it."""
    eos = tokenizer.eos_token_id
    out = []
    for row, length in zip(ids.tolist(), mask.sum(-1).tolist(), strict=True):
        row = row[:int(length)]
        if row and row[-1] == eos:
            row = row[:-1]
        out.append(str(tokenizer.decode(row)))
    return out


@torch.inference_mode()
def sequence_kl(policy: ShapedPolicy, base: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                completion_mask: torch.Tensor) -> torch.Tensor:
    """(B,) sum_t KL(pi(. | s_t) || pi0(. | s_t)) over each row's completion tokens (nats)."""
    tc = completion_mask.size(1)
    logp = policy.logprobs(input_ids, attention_mask, tc)
    ref = completion_logits(base, input_ids, attention_mask, tc).float().log_softmax(-1)
    p = logp.exp()
    per_token = torch.where(p > 0, p * (logp - ref), torch.zeros_like(p)).sum(-1)
    return (per_token * completion_mask).sum(-1)


@torch.inference_mode()
def evaluate_policy(policy: ShapedPolicy, base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    prompts: list[str], prompt_ids: list[list[int]], reward: RewardFn, samples: int,
                    max_new_tokens: int, batch_prompts: int, generator: torch.Generator) -> dict[str, Any]:
    """Decode ``samples`` completions of each prompt; return ``reward/mean``, ``reward/std``, ``kl/ref`` (mean
    sequence KL to ``base``), ``completion/length`` and the rows (prompt, completion, reward)."""
    device = next(policy.lm.parameters()).device
    texts, completions, kls, lengths = [], [], [], []
    for start in range(0, len(prompts), batch_prompts):
        chunk = [i for i in range(start, min(start + batch_prompts, len(prompts))) for _ in range(samples)]
        ids, mask = left_pad([prompt_ids[i] for i in chunk], tokenizer.pad_token_id, device)
        comp, comp_mask = policy.decode(ids, mask, max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id,
                                        generator)
        kls.append(sequence_kl(policy, base, torch.cat([ids, comp], 1), torch.cat([mask, comp_mask], 1), comp_mask))
        lengths.append(comp_mask.sum(-1).float())
        texts += [prompts[i] for i in chunk]
        completions += completion_texts(tokenizer, comp, comp_mask)
    rewards = torch.tensor(score(reward, texts, completions), dtype=torch.float64)
    return {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "kl/ref": float(torch.cat(kls).mean()),
        "completion/length": float(torch.cat(lengths).mean()),
        "rows": [{"prompt": p, "completion": c, "reward": float(r)}
                 for p, c, r in zip(texts, completions, rewards.tolist(), strict=True)],
    }
