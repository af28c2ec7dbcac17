"""The PPO loss (Schulman et al. 2017): clipped surrogate + clipped value loss - entropy bonus, over any
steps: the tokens of completions (token-level PPO and A2C) or the actions of an agent (one step each)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from langrl.rl.policy import clipped_surrogate, token_mean
from langrl.rl.value import clipped_value_loss

Aggregate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ppo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    value_clip: float | None,
    value_coef: float,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    aggregate: Aggregate = token_mean,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's loss over (B, T) steps -> scalar loss and its logged parts.

        loss = agg(-min(rho A, clip(rho, 1 - eps, 1 + eps) A)) + value_coef * value_loss - entropy_coef * agg(H)

    with rho = exp(logp - old_logp), value_loss the clipped 0.5 (V - R)^2 of PPO2 (``value_clip`` None:
    unclipped), ``entropy`` the (B, T) entropy of the step's distribution (None: no bonus), and
    ``aggregate(per_step, mask)`` the mean over steps (`langrl.rl.policy.AGGREGATIONS`). A2C is the
    same loss with ``clip_eps = inf`` and no value clipping, on fresh samples (rho = 1).

    Logged: ``loss/policy``, ``loss/value``, ``clip/fraction`` (steps whose ratio left the clip range),
    ``kl/old`` (mean of old_logp - logp, the k1 estimate of KL(pi_old || pi)), and ``entropy`` when given.
    """
    m = mask.to(logp.dtype)
    policy_loss = aggregate(clipped_surrogate(logp, old_logp, advantages, clip_eps), m)
    value_loss = clipped_value_loss(values, old_values, returns, m, value_clip)
    loss = policy_loss + value_coef * value_loss
    with torch.no_grad():
        log_ratio = logp.detach() - old_logp
        count = m.sum().clamp(min=1)
        clipped = ((torch.exp(log_ratio) - 1.0).abs() > clip_eps).to(m.dtype)
        parts = {"loss/policy": float(policy_loss.detach()), "loss/value": float(value_loss.detach()),
                 "clip/fraction": float((clipped * m).sum() / count),
                 "kl/old": float((-log_ratio * m).sum() / count)}
    if entropy is not None:
        mean_entropy = aggregate(entropy, m)
        parts["entropy"] = float(mean_entropy.detach())
        if entropy_coef > 0:
            loss = loss - entropy_coef * mean_entropy
    return loss, parts
