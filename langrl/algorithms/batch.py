"""The batch an update consumes: one row per completion, B = P prompts x G completions."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Everything an update needs, already on the policy's device.

    input_ids:       (B, Tp + Tc) left-padded prompt then right-padded completion
    attention_mask:  (B, Tp + Tc)
    completion_ids:  (B, Tc)
    completion_mask: (B, Tc) 1 on sampled tokens up to and including EOS
    old_logprobs:    (B, Tc) log-probs recorded while sampling (the behaviour policy)
    ref_logprobs:    (B, Tc) log-probs under the reference policy
    rewards:         (B,) task rewards, before any KL shaping
    group_size:      G; rows b*G .. b*G+G-1 share a prompt
    ref_logits:      (B, Tc, V) reference logits, kept only for the exact KL
    kl_tokens:       (B, Tc) per-token KL to the reference at sampling time (no gradient)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    rewards: torch.Tensor
    group_size: int
    kl_tokens: torch.Tensor
    ref_logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.rewards.size(0)

    def rows(self, index: slice) -> Batch:
        """The rows ``index`` as a smaller batch (a micro-batch)."""
        return Batch(
            input_ids=self.input_ids[index], attention_mask=self.attention_mask[index],
            completion_ids=self.completion_ids[index], completion_mask=self.completion_mask[index],
            old_logprobs=self.old_logprobs[index], ref_logprobs=self.ref_logprobs[index],
            rewards=self.rewards[index], group_size=self.group_size, kl_tokens=self.kl_tokens[index],
            ref_logits=None if self.ref_logits is None else self.ref_logits[index],
        )
