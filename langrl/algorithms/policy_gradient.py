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

from langrl.algorithms.batch import Batch
from langrl.config import KLConfig, TrainConfig
from langrl.losses.advantages import (
    baseline_advantages,
    grpo_advantages,
    rloo_advantages,
    update_moving_average,
)
from langrl.losses.kl import KL_ESTIMATORS, kl_exact, sequence_kl
from langrl.losses.logprobs import completion_logits, token_entropy, token_logprobs
from langrl.losses.policy import AGGREGATIONS, clipped_surrogate


class PolicyGradient:
    """The update of the REINFORCE family. Holds the only state these methods have: the baseline."""

    def __init__(self, name: str, train: TrainConfig, kl: KLConfig, temperature: float,
                 max_grad_norm: float):
        self.name, self.train, self.kl, self.temperature = name, train, kl, temperature
        self.max_grad_norm = max_grad_norm
        self.baseline: float | None = None

    def advantages(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
        """(B,) rewards -> (B,) advantages with this algorithm's estimator."""
        grouped = rewards.view(-1, group_size)
        return ADVANTAGES[self.name](self, grouped).reshape(-1)

    def update(self, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
               batch: Batch) -> dict[str, float]:
        """One optimisation step over ``batch``: ``train.epochs`` passes, micro-batched, one step each."""
        shaped = batch.rewards
        if self.kl.mode == "reward":
            shaped = shaped - self.kl.coef * sequence_kl(batch.kl_tokens, batch.completion_mask)
        advantages = self.advantages(shaped, batch.group_size)
        stats: dict[str, list[float]] = {}
        model.train()
        for _ in range(self.train.epochs):
            optimizer.zero_grad(set_to_none=True)
            for start in range(0, len(batch), self.train.micro_batch_size):
                rows = slice(start, start + self.train.micro_batch_size)
                loss, parts = self.loss(model, batch.rows(rows), advantages[rows])
                (loss * (advantages[rows].numel() / len(batch))).backward()
                for key, value in parts.items():
                    stats.setdefault(key, []).append(value)
            stats.setdefault("grad/norm", []).append(clip_gradients(model, self.max_grad_norm))
            optimizer.step()
        model.eval()
        metrics = {key: sum(values) / len(values) for key, values in stats.items()}
        metrics["advantage/std"] = float(advantages.std()) if advantages.numel() > 1 else 0.0
        if self.baseline is not None:
            metrics["baseline"] = self.baseline
        return metrics

    def loss(self, model: PreTrainedModel, batch: Batch,
             advantages: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy loss (+ KL loss in loss mode) for one micro-batch, and its logged parts."""
        tc = batch.completion_ids.size(1)
        logits = completion_logits(model, batch.input_ids, batch.attention_mask, tc, self.temperature)
        logp = token_logprobs(logits, batch.completion_ids)
        mask = batch.completion_mask.to(logp.dtype)
        aggregate = AGGREGATIONS[self.train.loss_aggregation]
        per_token = clipped_surrogate(logp, batch.old_logprobs, advantages, self.train.clip_eps)
        policy_loss = aggregate(per_token, mask)
        ratio = torch.exp(logp.detach() - batch.old_logprobs)
        clipped = ((ratio - 1.0).abs() > self.train.clip_eps).to(mask.dtype)
        parts = {
            "loss/policy": float(policy_loss.detach()),
            "entropy": float((token_entropy(logits) * mask).sum() / mask.sum().clamp(min=1)),
            "clip/fraction": float((clipped * mask).sum() / mask.sum().clamp(min=1)),
        }
        loss = policy_loss
        if self.kl.mode == "loss" and self.kl.coef > 0:
            kl_loss = aggregate(kl_per_token(self.kl.estimator, logp, logits, batch), mask)
            parts["loss/kl"] = float(kl_loss.detach())
            loss = loss + self.kl.coef * kl_loss
        return loss, parts

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline = state.get("baseline")


def kl_per_token(estimator: str, logp: torch.Tensor, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B, Tc) per-token KL(pi || pi_ref) carrying gradient through ``logp`` / ``logits``."""
    if estimator == "exact":
        assert batch.ref_logits is not None, "the exact KL needs the reference logits in the batch"
        return kl_exact(logits, batch.ref_logits)
    return KL_ESTIMATORS[estimator](logp, batch.ref_logprobs)


def clip_gradients(model: PreTrainedModel, max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = max_norm if max_norm > 0 else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(params, limit))


def reinforce(algo: PolicyGradient, rewards: torch.Tensor) -> torch.Tensor:
    """A = r - b with b the moving average of earlier batches' mean reward (then b is updated)."""
    baseline = algo.baseline if algo.baseline is not None else float(rewards.mean())
    advantages = baseline_advantages(rewards, baseline)
    algo.baseline = update_moving_average(algo.baseline, rewards, algo.train.baseline_momentum)
    return advantages


ADVANTAGES: dict[str, Callable[[PolicyGradient, torch.Tensor], torch.Tensor]] = {
    "reinforce": reinforce,
    "rloo": lambda algo, rewards: rloo_advantages(rewards),
    "grpo": lambda algo, rewards: grpo_advantages(rewards, scale=algo.train.scale_rewards),
}
