"""Advantages for sequence-level rewards: moving-average baseline, leave-one-out, group-normalised.

All take rewards of shape (P, G): P prompts, G completions each, and return the same shape.
``rewards_to_go`` turns sequence rewards into per-token ones for the prefix baseline.
"""

from __future__ import annotations

import torch


def baseline_advantages(rewards: torch.Tensor, baseline: float) -> torch.Tensor:
    """REINFORCE with a baseline (Williams 1992): A = r - b, with b a running mean of past rewards."""
    return rewards - baseline


def update_moving_average(average: float | None, rewards: torch.Tensor, momentum: float) -> float:
    """Moving average of the batch mean reward: b <- m b + (1 - m) mean(r); the first call gives mean(r)."""
    batch_mean = float(rewards.mean())
    return batch_mean if average is None else momentum * average + (1.0 - momentum) * batch_mean


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024).

    A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_j r_j). Needs G >= 2.
    """
    g = rewards.size(-1)
    if g < 2:
        raise ValueError("RLOO needs at least 2 completions per prompt (sampling.group_size >= 2)")
    return (rewards - rewards.mean(-1, keepdim=True)) * (g / (g - 1))


def grpo_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al. 2024, DeepSeekMath): A_i = (r_i - mean(r)) / (std(r) + eps) within each group.

    ``std`` is the unbiased sample standard deviation, as in TRL. ``scale=False`` keeps only the
    centring (Dr. GRPO, Liu et al. 2025), which avoids up-weighting groups whose rewards barely differ.
    """
    centred = rewards - rewards.mean(-1, keepdim=True)
    if not scale:
        return centred
    return centred / (rewards.std(-1, keepdim=True) + eps)


def rewards_to_go(rewards: torch.Tensor, prefix_rewards: torch.Tensor) -> torch.Tensor:
    """(B,), (B, T) -> (B, T): the reward completion i earns from its token t on, r_i - r(y_i,<t).

    r(y_<t), the reward of the text before token t, depends only on earlier tokens, so subtracting it from
    token t's return is a state-dependent baseline: the policy gradient stays unbiased, and a token is no
    longer credited (or blamed) for what came before it.
    """
    return rewards[:, None] - prefix_rewards
