"""Input checks shared by the exact and sampled posterior maths. Private: raise ValueError with the fix."""

from __future__ import annotations

import math

import torch


def as_f64(x: torch.Tensor, name: str, logp: bool = False) -> torch.Tensor:
    """Any tensor (or list) -> float64 1-D tensor; rejects other ranks, empty input and NaN.

    Log-probabilities (``logp=True``) may hold -inf (probability zero) but not +inf; values such as
    rewards must be finite.
    """
    t = torch.as_tensor(x).to(torch.float64)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one entry per outcome/sample), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    if logp and (t == math.inf).any():
        raise ValueError(f"{name} contains +inf; log-probabilities are <= 0")
    if not logp and not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


def same_shape(**tensors: torch.Tensor) -> None:
    """Raise unless all named tensors share one shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes differ: {shapes}")


def check_beta(beta: float) -> float:
    """beta must be a finite positive number (the KL coefficient / temperature)."""
    beta = float(beta)
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be finite and > 0, got {beta}")
    return beta


def check_normalised(logp: torch.Tensor, name: str, atol: float = 1e-4) -> None:
    """Raise unless exp(logp) sums to 1 within atol (a distribution over the whole enumerated space).

    The tolerance admits float32 sequence log-probs summed over a few tokens; a forgotten outcome or an
    unnormalised score is off by far more.
    """
    total = float(torch.logsumexp(logp, 0).exp())
    if abs(total - 1.0) > atol:
        raise ValueError(
            f"{name} must be normalised log-probabilities over the enumerated space; exp({name}) sums to "
            f"{total:.8g}. Enumerate every outcome, or renormalise with logp - logp.logsumexp(0)"
        )
