"""Generalised Advantage Estimation over token positions, TD(lambda) returns, and masked whitening.

Shapes: B sequences of up to T token positions; ``mask`` (B, T) marks each row's valid steps and is a
prefix, 1...1 0...0. Step t of row b is "token t was chosen", ``values[b, t]`` is V(s_t), the value of
the state in which token t is chosen, and ``rewards[b, t]`` is the reward received for it.
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    last_value: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, "High-dimensional continuous control using generalized advantage
    estimation"), (B, T) x (B, T) x (B, T) [x (B,)] -> advantages (B, T), returns (B, T).

        delta_t = r_t + gamma V_{t+1} - V_t
        A_t     = delta_t + gamma lam A_{t+1}      = sum_k (gamma lam)^k delta_{t+k}
        R_t     = A_t + V_t                        (the TD(lambda) return)

    Beyond a row's last valid step, V = ``last_value[b]`` (a bootstrap for a truncated row) or 0 when
    ``last_value`` is None (the episode ended), and A = 0. lam = 1 gives Monte-Carlo returns minus V;
    lam = 0 gives the one-step TD errors. Both outputs are 0 where ``mask`` is 0, whatever ``rewards``
    and ``values`` hold there. Pass detached ``values``: advantages and returns are regression targets.
    """
    valid = mask.bool()
    zeros = torch.zeros_like(values)
    rewards = torch.where(valid, rewards, zeros)
    values = torch.where(valid, values, zeros)
    bootstrap = zeros[:, 0] if last_value is None else last_value.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_adv = zeros[:, 0]
    next_value = zeros[:, 0]
    next_valid = torch.zeros_like(valid[:, 0])
    # Backward over T (a few hundred at most), vectorised over B. Where step t + 1 is not valid, step t
    # is its row's last one: it bootstraps from last_value and has no A_{t+1} to carry.
    for t in range(values.size(1) - 1, -1, -1):
        v_next = torch.where(next_valid, next_value, bootstrap)
        a_next = torch.where(next_valid, next_adv, zeros[:, 0])
        delta = rewards[:, t] + gamma * v_next - values[:, t]
        adv_t = torch.where(valid[:, t], delta + gamma * lam * a_next, zeros[:, 0])
        advantages[:, t] = adv_t
        next_adv, next_value, next_valid = adv_t, values[:, t], valid[:, t]
    returns = torch.where(valid, advantages + values, zeros)
    return advantages, returns


def lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    last_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """TD(lambda) returns (Sutton & Barto 2018, sec. 12.1), (B, T) -> (B, T): the critic targets of A2C.

    R_t = r_t + gamma ((1 - lam) V_{t+1} + lam R_{t+1}) = A_t + V_t with A the GAE of ``gae``, which
    documents the arguments.
    """
    return gae(rewards, values, mask, gamma, lam, last_value)[1]


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


def gae_env_steps(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the environment steps of a vectorised rollout, (T, N) x3 x (N,) -> advantages (T, N),
    returns (T, N); column n is environment n, whose episodes end and restart within the rollout.

        delta_t = r_t + gamma (1 - d_t) V_{t+1} - V_t
        A_t     = delta_t + gamma lam (1 - d_t) A_{t+1}
        R_t     = A_t + V_t

    ``dones[t, n]`` = 1 when the episode ended at step t: nothing flows back across it (V_{t+1} is then
    the next episode's first state). A truncated episode's bootstrap gamma V(final observation) belongs in
    its last reward. After the last step, V = ``last_values`` (the state the next rollout starts from).
    On a single episode that ends at a row's last valid step this equals :func:`gae` with that mask.
    """
    not_done = 1.0 - dones.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_adv, next_value = torch.zeros_like(last_values, dtype=values.dtype), last_values.to(values.dtype)
    for t in range(values.size(0) - 1, -1, -1):
        delta = rewards[t] + gamma * not_done[t] * next_value - values[t]
        next_adv = delta + gamma * lam * not_done[t] * next_adv
        advantages[t] = next_adv
        next_value = values[t]
    return advantages, advantages + values
