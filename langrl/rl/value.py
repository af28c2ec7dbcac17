"""Value-function (critic) losses."""

from __future__ import annotations

import torch


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None,
) -> torch.Tensor:
    """Clipped value loss of PPO2 (OpenAI baselines; Ziegler et al. 2019), (B, T) x4 -> scalar.

        V_clip = V_old + clamp(V - V_old, -clip, clip)
        loss   = 0.5 * masked_mean( max((V - R)^2, (V_clip - R)^2) )

    The max is pessimistic: a step whose new value moved more than ``clip`` away from ``V_old`` gets no
    gradient when that move would lower its error, which keeps the critic near the one that computed the
    advantages. ``clip=None`` gives the plain 0.5 * masked MSE. The mean is over all valid tokens of the
    batch.
    """
    valid = mask.bool()
    err = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    # where, not a product with the mask: NaN or inf in padded positions must not leak into the loss.
    err = torch.where(valid, err, torch.zeros_like(err))
    return 0.5 * err.sum() / valid.sum().clamp(min=1)
