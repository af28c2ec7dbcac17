"""Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL
divergence", 2020), and the exact full-vocabulary KL.

With ``log_ratio = log pi_ref(y) - log pi(y)`` for a token y ~ pi:

- k1 = -log_ratio                       unbiased, high variance, can be negative
- k2 = log_ratio**2 / 2                 biased (low bias near pi = pi_ref), always >= 0
- k3 = exp(log_ratio) - 1 - log_ratio   unbiased, always >= 0, low variance

Summed over the tokens of a sequence, k1 and k3 are unbiased for the sequence-level KL (chain rule).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T): log pi - log pi_ref."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T): (log pi - log pi_ref)^2 / 2."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T): exp(r) - 1 - r with r = log pi_ref - log pi."""
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio


def kl_exact(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """(B, T, V) x (B, T, V) -> (B, T): sum_v pi(v) (log pi(v) - log pi_ref(v)), over the whole vocabulary."""
    logp = logits.float().log_softmax(-1)
    ref_logp = ref_logits.float().log_softmax(-1)
    return (logp.exp() * (logp - ref_logp)).sum(-1)


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def sequence_kl(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) per-token KL and mask -> (B,) per-sequence KL in nats."""
    return (per_token * mask).sum(-1)
