"""Returns and advantages over steps with per-step discounts (GAE, TD(lambda)), and masked whitening.

Shapes: B rows of T steps. A step is a token chosen in a completion, or an action in an environment;
``values[b, t]`` is V(s_t), the value of the state step t is taken in, ``rewards[b, t]`` the reward
received for it, ``discounts[b, t]`` gamma times whether the episode continues after it.
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    discounts: torch.Tensor,
    lam: float,
    bootstrap: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, "High-dimensional continuous control using generalized advantage
    estimation"), (B, T) x (B, T) x (B, T) [x (B,)] -> advantages (B, T), returns (B, T).

        delta_t = r_t + discount_t V_{t+1} - V_t          V_T = bootstrap (0 when None)
        A_t     = delta_t + discount_t lam A_{t+1}        = sum_k (prod discount lam) delta_{t+k}
        R_t     = A_t + V_t                               (the TD(lambda) return)

    ``discount_t`` is gamma for a step whose successor continues the episode and 0 for a step that ends
    it (RLax's convention), so one function serves token sequences (:func:`token_discounts`), vectorised
    environment steps whose episodes end and restart inside a row (gamma (1 - done_t)), and truncated
    rows (gamma at the last step with ``bootstrap`` = V of the state after it). lam = 1 gives Monte-Carlo
    returns minus V; lam = 0 the one-step TD errors. ``mask`` (B, T): steps with 0 are padding; their
    rewards and values are ignored (they may hold NaN) and their outputs are 0. Pass detached
    ``values``: advantages and returns are regression targets.
    """
    zeros = torch.zeros_like(values)
    if mask is not None:
        valid = mask.bool()
        rewards = torch.where(valid, rewards, zeros)
        values = torch.where(valid, values, zeros)
        discounts = torch.where(valid, discounts.to(values.dtype), zeros)
    next_value = zeros[:, 0] if bootstrap is None else bootstrap.to(values.dtype)
    next_adv = zeros[:, 0]
    advantages = torch.zeros_like(values)
    # Backward over T (a few hundred at most), vectorised over B.
    for t in range(values.size(1) - 1, -1, -1):
        delta = rewards[:, t] + discounts[:, t] * next_value - values[:, t]
        next_adv = delta + discounts[:, t] * lam * next_adv
        advantages[:, t] = next_adv
        next_value = values[:, t]
    returns = advantages + values
    if mask is not None:
        returns = torch.where(mask.bool(), returns, zeros)
    return advantages, returns


def token_discounts(mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B, T) prefix mask -> (B, T) discounts: gamma while the next token is the row's, 0 at its last
    token (the completion, an episode, ends there) and on padding."""
    following = torch.zeros_like(mask, dtype=torch.float32)
    following[:, :-1] = mask[:, 1:].float()
    return gamma * following * mask.float()


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Masked whitening, any shape -> the same shape: (x - mean) / sqrt(var + eps) over entries with mask 1.

    mean and the unbiased variance are taken over the masked entries of the whole tensor, as for PPO
    advantages (Schulman et al. 2017; Ziegler et al. 2019; TRL's ``masked_whiten``). ``shift_mean=False``
    adds the mean back: only the scale changes, as for reward whitening, where the sign of the reward
    matters. Entries with mask 0 come out 0.
    """
    valid = mask.bool()
    zeros = torch.zeros_like(x)
    x = torch.where(valid, x, zeros)
    n = valid.sum()
    mean = x.sum() / n.clamp(min=1)
    centred = torch.where(valid, x - mean, zeros)
    # Bessel's correction, as TRL; a single valid entry has no spread, and clamping avoids 0 / 0.
    var = (centred**2).sum() / (n - 1).clamp(min=1)
    out = centred * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(valid, out, zeros)
