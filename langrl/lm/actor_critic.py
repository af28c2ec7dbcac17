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

from langrl.config import Config
from langrl.lm.base import Algorithm
from langrl.lm.batch import Batch
from langrl.lm.policy_gradient import kl_per_token
from langrl.models.forward import completion_forward, token_entropy, token_logprobs
from langrl.models.value import ValueHead
from langrl.rl.kl_control import per_token_kl_rewards
from langrl.rl.policy import AGGREGATIONS
from langrl.rl.ppo import ppo_loss
from langrl.rl.returns import gae, token_discounts, whiten
from langrl.run import seeds
from langrl.run.optim import minibatch_epochs, trainable


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

    def sampling_modules(self) -> dict[str, nn.Module]:
        return {"value_head": self.head} if self.critic is None else {}  # a separate critic is not sampled with

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
        advantages, returns = gae(rewards, old_values, token_discounts(mask, ac.gamma), ac.lam, mask=mask)
        if ac.whiten_advantages:
            advantages = whiten(advantages, mask)
        return old_values, advantages, returns

    def update(self, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
               batch: Batch) -> dict[str, float]:
        old_values, advantages, returns = self.targets(batch)
        variant = self.variant

        def loss(rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            return self.loss(model, batch.rows(rows), old_values[rows], advantages[rows], returns[rows])

        model.train()
        metrics = minibatch_epochs(
            len(batch), self.config.train.micro_batch_size, variant.epochs(self.config), loss, optimizer,
            trainable(model, self.modules()), self.config.optim.max_grad_norm,
            generator=seeds.generator(self.config.seed, "minibatch", batch.step),
            step_every="minibatch" if variant.step_per_minibatch else "epoch", device=advantages.device)
        model.eval()
        mask = batch.completion_mask
        metrics["value/mean"] = float((old_values * mask).sum() / mask.sum().clamp(min=1))
        return metrics

    def loss(self, model: PreTrainedModel, batch: Batch, old_values: torch.Tensor, advantages: torch.Tensor,
             returns: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The PPO loss (`langrl.rl.ppo`) on the completion tokens (+ the KL loss in ``kl.mode: loss``)."""
        ac, kl, train = self.config.actor_critic, self.config.kl, self.config.train
        tc = batch.completion_ids.size(1)
        logits, hidden = completion_forward(model, batch.input_ids, batch.attention_mask, tc,
                                            self.config.sampling.temperature, hidden=self.critic is None)
        values = self.head(hidden) if hidden is not None else self.critic_values(batch)
        logp = token_logprobs(logits, batch.completion_ids)
        aggregate = AGGREGATIONS[train.loss_aggregation]
        with torch.set_grad_enabled(torch.is_grad_enabled() and ac.entropy_coef > 0):
            entropy = token_entropy(logits)
        loss, parts = ppo_loss(logp, batch.old_logprobs, advantages, values, old_values, returns,
                               batch.completion_mask, self.variant.clip(self.config),
                               self.variant.value_clip(self.config), ac.value_coef, entropy, ac.entropy_coef,
                               aggregate)
        if kl.mode == "loss" and self.kl_coef > 0:
            kl_loss = aggregate(kl_per_token(kl.estimator, logp, logits, batch), batch.completion_mask.to(logp.dtype))
            parts["loss/kl"] = float(kl_loss.detach())
            loss = loss + self.kl_coef * kl_loss
        return loss, parts
