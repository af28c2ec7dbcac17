"""REINFORCE with a baseline, RLOO and GRPO: one update, three advantage estimators.

The three differ only in how a completion's reward becomes its advantage (see ``ADVANTAGES``); the
update is the clipped surrogate of PPO, which on the first pass over fresh samples is exactly the
REINFORCE gradient, so ``train.epochs = 1`` gives the plain on-policy methods and ``epochs > 1`` gives
GRPO's clipped multi-epoch variant.

The KL penalty to the reference, beta * KL(pi || pi_ref), goes either into the reward (subtracted per
sequence before advantages, as in InstructGPT/RLOO) or into the loss (added per token, as in GRPO).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel

from langrl.lm.base import Algorithm
from langrl.lm.batch import Batch
from langrl.models.forward import completion_logits, token_entropy, token_logprobs
from langrl.rl.advantages import (
    baseline_advantages,
    grpo_advantages,
    rewards_to_go,
    rloo_advantages,
    update_moving_average,
)
from langrl.rl.kl import KL_ESTIMATORS, kl_exact, sequence_kl
from langrl.rl.policy import AGGREGATIONS, clipped_surrogate
from langrl.run.optim import minibatch_epochs, trainable


class PolicyGradient(Algorithm):
    """The update of the REINFORCE family. Its only state besides beta: REINFORCE's baseline."""

    baseline: float | None = None

    def advantages(self, rewards: torch.Tensor, group_size: int,
                   prefix_rewards: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) rewards -> (B,) advantages with this algorithm's estimator; with ``prefix_rewards`` (B, T),
        (B, T) per-token advantages of the rewards to go, the group baselines taken position by position."""
        if prefix_rewards is None:
            grouped = rewards.view(-1, group_size)
            return ADVANTAGES[self.name](self, grouped).reshape(-1)
        if self.name == "reinforce":  # one moving baseline, updated once per batch
            return self.advantages(rewards, group_size)[:, None] - prefix_rewards
        to_go = rewards_to_go(rewards, prefix_rewards)  # (B, T) -> (P, T, G): groups at each position
        by_position = to_go.view(-1, group_size, to_go.size(1)).transpose(1, 2)
        return ADVANTAGES[self.name](self, by_position).transpose(1, 2).reshape(to_go.shape)

    def update(self, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
               batch: Batch) -> dict[str, float]:
        """One optimisation step over ``batch``: ``train.epochs`` passes, micro-batched, one step each."""
        train = self.config.train
        shaped = batch.rewards
        if self.config.kl.mode == "reward":
            shaped = shaped - self.kl_coef * sequence_kl(batch.kl_tokens, batch.completion_mask)
        prefix = batch.prefix_rewards
        if prefix is not None and self.config.kl.mode == "reward":
            # the KL penalty of the tokens before t is part of what the prefix "earned" too
            prefix = prefix - self.kl_coef * (batch.kl_tokens.cumsum(-1) - batch.kl_tokens)
        advantages = self.advantages(shaped, batch.group_size, prefix)

        def loss(rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            return self.loss(model, batch.rows(rows), advantages[rows])

        model.train()
        # In order, no shuffling: every epoch sees the whole batch and ends with one optimizer step.
        metrics = minibatch_epochs(len(batch), train.micro_batch_size, train.epochs, loss, optimizer,
                                   trainable(model), self.config.optim.max_grad_norm, step_every="epoch",
                                   device=advantages.device)
        model.eval()
        shown = advantages if advantages.dim() == 1 else advantages[batch.completion_mask.bool()]
        metrics["advantage/std"] = float(shown.std()) if shown.numel() > 1 else 0.0
        if self.baseline is not None:
            metrics["baseline"] = self.baseline
        return metrics

    def loss(self, model: PreTrainedModel, batch: Batch,
             advantages: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy loss (+ KL loss in loss mode) for one micro-batch, and its logged parts."""
        train, kl = self.config.train, self.config.kl
        temperature = self.config.sampling.temperature
        tc = batch.completion_ids.size(1)
        logits = completion_logits(model, batch.input_ids, batch.attention_mask, tc, temperature)
        logp = token_logprobs(logits, batch.completion_ids)
        mask = batch.completion_mask.to(logp.dtype)
        aggregate = AGGREGATIONS[train.loss_aggregation]
        per_token = clipped_surrogate(logp, batch.old_logprobs, advantages, train.clip_eps)
        policy_loss = aggregate(per_token, mask)
        parts = {"loss/policy": float(policy_loss.detach()),
                 **policy_stats(logits, logp, batch, train.clip_eps)}
        loss = policy_loss
        if kl.mode == "loss" and self.kl_coef > 0:
            kl_loss = aggregate(kl_per_token(kl.estimator, logp, logits, batch), mask)
            parts["loss/kl"] = float(kl_loss.detach())
            loss = loss + self.kl_coef * kl_loss
        return loss, parts

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.baseline = state.get("baseline")


def policy_stats(logits: torch.Tensor, logp: torch.Tensor, batch: Batch, clip_eps: float) -> dict[str, float]:
    """Mean token entropy and the fraction of tokens whose ratio left the clip range (no gradient)."""
    mask = batch.completion_mask.to(logp.dtype)
    count = mask.sum().clamp(min=1)
    ratio = torch.exp(logp.detach() - batch.old_logprobs)
    clipped = ((ratio - 1.0).abs() > clip_eps).to(mask.dtype)
    return {
        "entropy": float((token_entropy(logits) * mask).sum() / count),
        "clip/fraction": float((clipped * mask).sum() / count),
    }


def kl_per_token(estimator: str, logp: torch.Tensor, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B, Tc) per-token KL(pi || pi_ref) carrying gradient through ``logp`` / ``logits``."""
    if estimator == "exact":
        assert batch.ref_logits is not None, "the exact KL needs the reference logits in the batch"
        return kl_exact(logits, batch.ref_logits)
    return KL_ESTIMATORS[estimator](logp, batch.ref_logprobs)


def reinforce(algo: PolicyGradient, rewards: torch.Tensor) -> torch.Tensor:
    """A = r - b with b the moving average of earlier batches' mean reward (then b is updated)."""
    baseline = algo.baseline if algo.baseline is not None else float(rewards.mean())
    advantages = baseline_advantages(rewards, baseline)
    algo.baseline = update_moving_average(algo.baseline, rewards, algo.config.train.baseline_momentum)
    return advantages


ADVANTAGES: dict[str, Callable[[PolicyGradient, torch.Tensor], torch.Tensor]] = {
    "reinforce": reinforce,
    "rloo": lambda algo, rewards: rloo_advantages(rewards),
    "grpo": lambda algo, rewards: grpo_advantages(rewards, scale=algo.config.train.scale_rewards),
}
