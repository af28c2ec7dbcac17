"""A2C and PPO for language models: token-level GAE with a value head (Ziegler et al. 2019;
Ouyang et al. 2022; the "N implementation details of RLHF with PPO", Huang et al. 2024).

Each completion token is an action; the reward of token t is -beta * KL_t to the reference, plus the
sequence's score on its last token (``kl.mode: reward``; with ``kl.mode: loss`` the KL goes into the
loss instead). GAE(gamma, lambda) over the tokens gives advantages and value targets. The value of the
state each token was chosen in is recorded while sampling (shared trunk), so the update needs no extra
pass for old log-probs or old values.

- ``a2c``: one pass, no ratio or value clipping, one optimizer step per batch.
- ``ppo``: ``train.epochs`` passes over shuffled minibatches of ``train.micro_batch_size`` rows, clipped
  ratio and value, one optimizer step per minibatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from langrl.algorithms.base import Algorithm, clip_gradients, mean_metrics, trainable
from langrl.algorithms.batch import Batch
from langrl.algorithms.policy_gradient import kl_per_token, policy_stats
from langrl.config import Config
from langrl.losses.gae import gae, whiten
from langrl.losses.kl_control import per_token_kl_rewards
from langrl.losses.logprobs import completion_forward, token_logprobs
from langrl.losses.policy import AGGREGATIONS, clipped_surrogate
from langrl.losses.value import clipped_value_loss
from langrl.models.value import ValueHead


@dataclass(frozen=True)
class Variant:
    """What distinguishes A2C from PPO."""

    epochs: Callable[[Config], int]
    clip: Callable[[Config], float]
    value_clip: Callable[[Config], float | None]
    step_per_minibatch: bool


VARIANTS = {
    "a2c": Variant(epochs=lambda c: 1, clip=lambda c: float("inf"), value_clip=lambda c: None,
                   step_per_minibatch=False),
    "ppo": Variant(epochs=lambda c: c.train.epochs, clip=lambda c: c.train.clip_eps,
                   value_clip=lambda c: c.actor_critic.value_clip, step_per_minibatch=True),
}


class ActorCritic(Algorithm):
    """A2C / PPO with a value head on the policy's trunk, or on a separate copy of the model."""

    def __init__(self, name: str, config: Config, policy: PreTrainedModel,
                 critic: PreTrainedModel | None = None):
        """``critic``: a separate copy of the initial model (``actor_critic.critic: separate``), else None."""
        super().__init__(name, config)
        self.variant = VARIANTS[name]
        device = next(policy.parameters()).device
        self.head = ValueHead(policy.config.hidden_size).to(device)
        self.critic = critic

    @property
    def value_head(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self.head if self.critic is None else None

    def modules(self) -> dict[str, nn.Module]:
        return {"value_head": self.head} if self.critic is None else {"value_head": self.head,
                                                                       "critic": self.critic}

    def critic_values(self, batch: Batch) -> torch.Tensor:
        """(B, Tc) values from the separate critic (with gradient when called under grad mode)."""
        assert self.critic is not None
        _, hidden = completion_forward(self.critic, batch.input_ids, batch.attention_mask,
                                       batch.completion_ids.size(1), hidden=True)
        assert hidden is not None
        return self.head(hidden)

    def targets(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Old values, advantages and returns, all (B, Tc), from GAE over token rewards."""
        ac, mask = self.config.actor_critic, batch.completion_mask.float()
        if batch.values is not None:
            old_values = batch.values
        else:
            with torch.no_grad():
                old_values = self.critic_values(batch) * mask
        score = batch.rewards
        if ac.whiten_rewards:
            score = whiten(score, torch.ones_like(score), shift_mean=False)
        coef = self.kl_coef if self.config.kl.mode == "reward" else 0.0
        rewards = per_token_kl_rewards(score, batch.kl_tokens, mask, coef)
        advantages, returns = gae(rewards, old_values, mask, ac.gamma, ac.lam)
        if ac.whiten_advantages:
            advantages = whiten(advantages, mask)
        return old_values, advantages, returns

    def update(self, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
               batch: Batch) -> dict[str, float]:
        old_values, advantages, returns = self.targets(batch)
        params = trainable(model, self.modules())
        generator = torch.Generator().manual_seed(self.config.seed * 7919 + batch.step)
        size = self.config.train.micro_batch_size
        stats: dict[str, list[float]] = {}
        model.train()
        optimizer.zero_grad(set_to_none=True)
        for _ in range(self.variant.epochs(self.config)):
            order = torch.randperm(len(batch), generator=generator).to(advantages.device)
            for rows in order.split(size):
                loss, parts = self.loss(model, batch.rows(rows), old_values[rows], advantages[rows],
                                        returns[rows])
                scale = 1.0 if self.variant.step_per_minibatch else len(rows) / len(batch)
                (loss * scale).backward()
                for key, value in parts.items():
                    stats.setdefault(key, []).append(value)
                if self.variant.step_per_minibatch:
                    self.step(optimizer, params, stats)
        if not self.variant.step_per_minibatch:
            self.step(optimizer, params, stats)
        model.eval()
        metrics = mean_metrics(stats)
        mask = batch.completion_mask
        metrics["value/mean"] = float((old_values * mask).sum() / mask.sum().clamp(min=1))
        return metrics

    def step(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
             stats: dict[str, list[float]]) -> None:
        stats.setdefault("grad/norm", []).append(clip_gradients(params, self.config.optim.max_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def loss(self, model: PreTrainedModel, batch: Batch, old_values: torch.Tensor, advantages: torch.Tensor,
             returns: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped policy loss + value_coef * value loss - entropy_coef * entropy (+ KL loss)."""
        ac, kl, train = self.config.actor_critic, self.config.kl, self.config.train
        tc = batch.completion_ids.size(1)
        logits, hidden = completion_forward(model, batch.input_ids, batch.attention_mask, tc,
                                            self.config.sampling.temperature, hidden=self.critic is None)
        values = self.head(hidden) if hidden is not None else self.critic_values(batch)
        logp = token_logprobs(logits, batch.completion_ids)
        mask = batch.completion_mask.to(logp.dtype)
        aggregate = AGGREGATIONS[train.loss_aggregation]
        clip = self.variant.clip(self.config)
        policy_loss = aggregate(clipped_surrogate(logp, batch.old_logprobs, advantages, clip), mask)
        value_clip = self.variant.value_clip(self.config)
        value_loss = clipped_value_loss(values, old_values, returns, mask, value_clip)
        loss = policy_loss + ac.value_coef * value_loss
        parts = {"loss/policy": float(policy_loss.detach()), "loss/value": float(value_loss.detach()),
                 **policy_stats(logits, logp, batch, train.clip_eps)}
        if ac.entropy_coef > 0:
            logp_all = logits.float().log_softmax(-1)
            entropy = aggregate(-(logp_all.exp() * logp_all).sum(-1), mask)
            loss = loss - ac.entropy_coef * entropy
        if kl.mode == "loss" and self.kl_coef > 0:
            kl_loss = aggregate(kl_per_token(kl.estimator, logp, logits, batch), mask)
            parts["loss/kl"] = float(kl_loss.detach())
            loss = loss + self.kl_coef * kl_loss
        return loss, parts
