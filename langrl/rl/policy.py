"""Policy-gradient surrogate losses and how per-token losses are averaged."""

from __future__ import annotations

from collections.abc import Callable

import torch


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> torch.Tensor:
    """Per-token PPO-clip loss (Schulman et al. 2017), (B, T) x (B, T) x (B,) or (B, T) -> (B, T).

    loss_t = -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps) A) with rho_t = exp(logp_t - old_logp_t).
    On the first pass over fresh samples rho = 1 and the gradient is exactly REINFORCE's, A grad logp.
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    return -torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)


def seq_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's tokens, then over sequences (GRPO as published)."""
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over all tokens of the batch (DAPO, Yu et al. 2025): long sequences weigh more."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def seq_sum(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over each sequence's tokens, mean over sequences: the unbiased REINFORCE estimator of grad E[R]."""
    return (per_token * mask).sum(-1).mean()


AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "seq_mean": seq_mean,
    "token_mean": token_mean,
    "seq_sum": seq_sum,
}
