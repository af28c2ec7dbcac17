"""Offline value-based learning of a token policy: ILQL's losses (Snell et al. 2022, "Offline RL for
natural language generation with implicit language Q learning") and the weights of the two baselines
users compare it with, filtered behaviour cloning and reward-weighted regression.

Every completion token is an action: ``a_t`` is taken in the state ``s_t = (prompt, a_<t)``. Shapes are
B rows of T completion tokens; ``mask`` (B, T) is 1 on a row's tokens; ``rewards[b, t]`` is the reward
for token t (a scored text puts its reward on its last token); ``discounts[b, t]`` is gamma while the
completion goes on after token t and 0 at its last token (`langrl.rl.returns.token_discounts`). K twin
Q heads (K = 2) each give Q_k(s_t, .) over the vocabulary; their Polyak-averaged copies give Qhat_k.

    Q target     y_t   = r_t + discount_t V(s_{t+1})                                   (no gradient)
    Q loss       L_Q   = sum_k mean_t (Q_k(s_t, a_t) - y_t)^2
    V loss       L_V   = mean_t L2_tau(u_t),  u_t = min_k Qhat_k(s_t, a_t) - V(s_t),
                 L2_tau(u) = |tau - 1(u < 0)| u^2                                       (expectile regression)
    CQL          L_CQL = sum_k mean_t [logsumexp_a Q_k(s_t, a) - Q_k(s_t, a_t)]         (cross-entropy toward a_t)
    policy       L_pi  = -mean_t w_t log pi(a_t | s_t),  w_t = min(exp(A_t / lambda), w_max),
                 A_t   = min_k Qhat_k(s_t, a_t) - V(s_t)                                 (AWAC; w = 1: NLL)
    total        L     = L_Q + L_V + alpha L_CQL + c_pi L_pi
    decoding     logits(a | s) = log pi_beta(a | s) + beta (min_k Qhat_k(s, a) - V(s))

With tau -> 1 the expectile V(s) tends to the largest Q(s, a) over the actions the data takes in s, so
the fixed point of the two regressions is the max-backup restricted to the data's support (no
out-of-data action is ever queried: the "implicit" of implicit Q-learning, Kostrikov et al. 2022); at
tau = 1/2 it is the mean, SARSA's backup of the behaviour policy. `expectile` computes the exact
expectile of a weighted sample, the oracle of tests on enumerable tasks. The CQL term (Kumar et al. 2020)
pushes Q down on the actions the data never takes, so that decoding with a large beta does not chase
their unconstrained values.

Baselines on whole sequences (reward R_i of row i, N rows):

    filtered BC  NLL on the rows whose reward is in the top ``fraction`` (ties at the cut all kept)
    RWR          NLL weighted by w_i = N softmax_i(R / temperature)  (mean weight 1; Peters & Schaal 2007)
"""

from __future__ import annotations

import math

import torch

from langrl.rl.policy import token_mean


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """(...) -> (...): L2_tau(u) = |tau - 1(u < 0)| u^2 of u = target - prediction.

    tau = 1/2 gives half the squared error; tau > 1/2 weighs under-predictions (u > 0) more, so the
    minimiser over a constant prediction is the tau-expectile of the targets, the maximum as tau -> 1.
    """
    weight = (tau - (diff < 0).to(diff.dtype)).abs()  # in diff's dtype (torch.where of floats is float32)
    return weight * diff.square()


def expectile(values: torch.Tensor, weights: torch.Tensor | None = None, tau: float = 0.5) -> float:
    """(N,) values [x (N,) non-negative weights] -> the tau-expectile v, in float64.

    v is the root of sum_i w_i |tau - 1(x_i < v)| (x_i - v) = 0 (the minimiser of sum_i w_i L2_tau(x_i - v)),
    found by bisection on [min x, max x], where the left side decreases strictly. tau = 1/2 gives the
    weighted mean, tau = 1 the maximum over positive weights, tau = 0 the minimum.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    x = values.detach().double().reshape(-1)
    w = torch.ones_like(x) if weights is None else weights.detach().double().reshape(-1)
    if x.numel() == 0 or x.shape != w.shape or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("expectile needs N >= 1 values and as many non-negative weights, not all zero")
    x, w = x[w > 0], w[w > 0]
    if tau == 1.0:
        return float(x.max())
    if tau == 0.0:
        return float(x.min())
    lo, hi = float(x.min()), float(x.max())
    for _ in range(200):  # halving [lo, hi] 200 times reaches float64 resolution of any range
        mid = 0.5 * (lo + hi)
        u = x - mid
        slope = float((w * (tau - (u < 0).double()).abs() * u).sum())
        lo, hi = (mid, hi) if slope > 0 else (lo, mid)
        if hi - lo <= 1e-15 * max(1.0, abs(lo)):
            break
    return 0.5 * (lo + hi)


def next_values(values: torch.Tensor) -> torch.Tensor:
    """(B, T) V(s_t) -> (B, T) V(s_{t+1}): shifted left by one, 0 after the last column.

    Whatever stands after a row's last token (padding) is multiplied by its discount 0 in `q_targets`.
    """
    return torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)


def q_targets(rewards: torch.Tensor, discounts: torch.Tensor, next_v: torch.Tensor) -> torch.Tensor:
    """(B, T) x3 -> (B, T): y_t = r_t + discount_t V(s_{t+1}), detached (a regression target)."""
    return (rewards + discounts * next_v).detach()


def taken(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(..., B, T, A) action values x (B, T) actions -> (..., B, T): Q(s_t, a_t)."""
    index = actions.expand(*q.shape[:-1])[..., None]
    return q.gather(-1, index).squeeze(-1)


def q_loss(q_taken: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(K, B, T) Q_k(s_t, a_t) x (B, T) targets x (B, T) mask -> scalar L_Q = sum_k mean_t (Q_k - y_t)^2."""
    err = torch.where(mask.bool(), (q_taken - targets).square(), torch.zeros_like(q_taken))
    return err.sum() / mask.sum().clamp(min=1)


def value_loss(values: torch.Tensor, target_q_taken: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    """(B, T) V(s_t) x (B, T) min_k Qhat_k(s_t, a_t) x (B, T) mask -> scalar L_V (expectile regression).

    The target is detached here: V is regressed onto the target heads, which only Polyak averaging moves.
    """
    loss = expectile_loss(target_q_taken.detach() - values, tau)
    return token_mean(torch.where(mask.bool(), loss, torch.zeros_like(loss)), mask)


def cql_loss(q: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(K, B, T, A) Q over the vocabulary x (B, T) actions x (B, T) mask -> scalar
    L_CQL = sum_k mean_t [logsumexp_a Q_k(s_t, a) - Q_k(s_t, a_t)], the cross-entropy of softmax(Q_k)
    toward the taken token (>= 0, 0 only when Q_k puts all its softmax mass on a_t)."""
    ce = torch.logsumexp(q.float(), dim=-1) - taken(q.float(), actions)
    ce = torch.where(mask.bool(), ce, torch.zeros_like(ce))
    return ce.sum() / mask.sum().clamp(min=1)


def awac_weights(advantages: torch.Tensor, temperature: float | None, max_weight: float) -> torch.Tensor:
    """(B, T) A_t -> (B, T) w_t = min(exp(A_t / temperature), max_weight), detached; all ones when
    ``temperature`` is None (plain NLL, i.e. behaviour cloning of pi_beta)."""
    if temperature is None:
        return torch.ones_like(advantages)
    return torch.exp(advantages.detach() / temperature).clamp(max=max_weight)


def weighted_nll(logp_taken: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log pi(a_t | s_t) x (B, T) or (B,) weights x (B, T) mask -> scalar -mean_t w_t log pi(a_t | s_t)
    (mean over the batch's tokens)."""
    w = weights[:, None] if weights.dim() == 1 else weights
    per_token = torch.where(mask.bool(), -w * logp_taken, torch.zeros_like(logp_taken))
    return token_mean(per_token, mask)


def shaped_logits(logp_beta: torch.Tensor, q: torch.Tensor, v: torch.Tensor, beta: float) -> torch.Tensor:
    """(..., A) log pi_beta x (..., A) Q x (...) V -> (..., A): log pi_beta(a|s) + beta (Q(s, a) - V(s)).

    beta = 0 decodes pi_beta; as beta grows the policy concentrates on argmax_a Q(s, a) among the tokens
    pi_beta gives mass (log pi_beta = -inf stays -inf). V(s) shifts every logit of s alike: it changes
    no probability, but keeps the logits on the scale of advantages.
    """
    return logp_beta + beta * (q - v[..., None])


@torch.no_grad()
def polyak_update(target: torch.nn.Module, online: torch.nn.Module, rate: float) -> None:
    """theta_hat <- (1 - rate) theta_hat + rate theta, parameter by parameter (rate = 1 copies)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o.detach().to(t.dtype), rate)


def top_fraction(rewards: torch.Tensor, fraction: float) -> torch.Tensor:
    """(N,) rewards -> (N,) bool: the rows whose reward is at least the ceil(fraction N)-th largest (ties
    at the cut are all kept, so the share may exceed ``fraction``); filtered BC trains on these."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, math.ceil(fraction * rewards.numel()))
    cut = torch.topk(rewards.reshape(-1), k).values[-1]
    return rewards >= cut


def rwr_weights(rewards: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N,) rewards -> (N,) w_i = N exp(R_i / temperature) / sum_j exp(R_j / temperature): mean 1, so the
    loss keeps the scale of plain NLL; temperature -> inf gives behaviour cloning, -> 0 the best row only."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    r = rewards.double()
    return (torch.softmax(r / temperature, dim=0) * r.numel()).to(rewards.dtype)
