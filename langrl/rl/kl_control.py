"""KL-penalty coefficients (fixed or adaptive) and the per-token KL-shaped rewards of RLHF.

The controllers are the one stateful piece of ``langrl.rl``: a float and how it moves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, "Fine-tuning language models from human
    preferences", sec. 2.2): a proportional controller that steers KL(pi || pi_ref) towards ``target``.

        e     = clip(KL / target - 1, -0.2, 0.2)
        coef <- coef * (1 + e * n_steps / horizon)
    """

    coef: float
    """Current penalty coefficient beta."""
    target: float
    """KL (nats per sequence) the controller aims for."""
    horizon: int
    """Number of samples over which the coefficient may change by about a factor e^0.2."""

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move ``coef`` after ``n_steps`` samples whose mean KL was ``current_kl``; return the new coef."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * n_steps / self.horizon
        return self.coef

    def state_dict(self) -> dict[str, float]:
        """Everything needed to resume training."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from ``state_dict()``."""
        self.coef = float(state["coef"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])


@dataclass
class FixedKLController:
    """A constant KL coefficient with the interface of ``AdaptiveKLController``."""

    coef: float
    """The penalty coefficient beta."""

    def update(self, current_kl: float, n_steps: int) -> float:
        """Return ``coef`` unchanged."""
        return self.coef

    def state_dict(self) -> dict[str, float]:
        """Everything needed to resume training."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore from ``state_dict()``."""
        self.coef = float(state["coef"])


def per_token_kl_rewards(
    score: torch.Tensor, kl_tokens: torch.Tensor, mask: torch.Tensor, coef: float
) -> torch.Tensor:
    """Per-token rewards of InstructGPT (Ouyang et al. 2022; Ziegler et al. 2019), (B,) x (B, T) x (B, T)
    -> (B, T).

        r_t = -coef * kl_t + [t = last valid token of the row] * score

    with kl_t a per-token KL estimate (e.g. ``kl_k1``, log pi - log pi_ref). Summed over a row this is
    score - coef * KL(sequence), the KL-regularised objective, but spread so that GAE credits each token
    with its own KL. 0 where ``mask`` is 0; a row without valid tokens gets no score. Pass detached
    ``kl_tokens``: rewards are constants for the policy gradient.
    """
    valid = mask.bool()
    rewards = torch.where(valid, -coef * kl_tokens, torch.zeros_like(kl_tokens))
    # The last valid index is the largest position with mask 1 (for any mask, not only prefixes).
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    last = torch.where(valid, positions, torch.full_like(positions, -1)).argmax(-1)
    has_any = valid.any(-1)
    bonus = torch.where(has_any, score.to(rewards.dtype), torch.zeros_like(score, dtype=rewards.dtype))
    return rewards.scatter_add(1, last[:, None], bonus[:, None])
