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
    kl_tokens:       (B, Tc) per-token KL to the reference at sampling time (no gradient)
    step:            the training step (1-based); seeds minibatch shuffling so resumed runs repeat it
    values:          (B, Tc) values V(s_t) recorded while sampling (actor-critic with a shared trunk)
    ref_logits:      (B, Tc, V) reference logits, kept only for the exact KL
    prefix_rewards:  (B, Tc) the reward each completion had earned before token t (``train.prefix_baseline``)
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
    step: int = 0
    values: torch.Tensor | None = None
    ref_logits: torch.Tensor | None = None
    prefix_rewards: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.rewards.size(0)

    def rows(self, index: slice | torch.Tensor) -> Batch:
        """The rows ``index`` (a slice or index tensor) as a smaller batch (a micro-batch)."""
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return Batch(
            input_ids=self.input_ids[index], attention_mask=self.attention_mask[index],
            completion_ids=self.completion_ids[index], completion_mask=self.completion_mask[index],
            old_logprobs=self.old_logprobs[index], ref_logprobs=self.ref_logprobs[index],
            rewards=self.rewards[index], group_size=self.group_size, kl_tokens=self.kl_tokens[index],
            step=self.step, values=pick(self.values), ref_logits=pick(self.ref_logits),
            prefix_rewards=pick(self.prefix_rewards),
        )
