"""Temporal-difference targets for action values (Sutton & Barto 2018, ch. 6), batched: B transitions
with A actions. ``discount`` is gamma for a transition whose next state continues the episode and 0 for
one that ends it (as in `langrl.rl.returns.gae`), so terminal transitions need no special case.

    Q-learning        y = r + discount * max_a' Q(s', a')                   (Watkins 1989)
    SARSA             y = r + discount * Q(s', a')  for the action a' taken (Rummery & Niranjan 1994)
    expected SARSA    y = r + discount * sum_a' pi(a'|s') Q(s', a')         (van Seijen et al. 2009)
    double Q          y = r + discount * Q_target(s', argmax_a' Q_online(s', a'))   (van Hasselt 2010)
    soft (KL to pi0)  y = r + discount * V_soft(s'),
                      V_soft(s) = beta log sum_a pi0(a|s) exp(Q(s, a) / beta)

n-step forms (Sutton & Barto 2018, ch. 7): :func:`n_step_return` folds n rewards into ``G`` and their
discounts into ``D``; passing ``(G, D)`` as ``(rewards, discounts)`` to any target above bootstraps it
from the n-th next state, ``y = G + D * value(s_n)``. For SARSA and expected SARSA with the behaviour as
target policy this is the on-policy n-step return; for Q-learning it is the uncorrected n-step return of
Rainbow (Hessel et al. 2018), biased off-policy for n > 1 (the n - 1 behaviour actions are not the greedy
ones); for soft Q each reward after the first also pays ``beta log pi(a|s) / pi0(a|s)``
(:func:`soft_log_ratio`), the per-step KL term of the objective (path consistency, Nachum et al. 2017).

The soft backup maximises E[r] - beta KL(pi || pi0) per step; its optimum is the posterior policy
``pi*(a|s) = pi0(a|s) exp(Q*(s, a) / beta) / Z(s)`` (:func:`soft_policy`), the same pi* that
`langrl.bayes` computes over whole sequences.
"""

from __future__ import annotations

import torch


def q_learning_target(rewards: torch.Tensor, discounts: torch.Tensor, next_q: torch.Tensor) -> torch.Tensor:
    """(B,) x (B,) x (B, A) -> (B,): r + discount max_a' Q(s', a')."""
    # amax, not max(-1).values: max with indices on small tensors takes milliseconds when the intra-op
    # threads compete for busy cores, amax does not
    return rewards + discounts * next_q.amax(-1)


def sarsa_target(rewards: torch.Tensor, discounts: torch.Tensor, next_q: torch.Tensor,
                 next_actions: torch.Tensor) -> torch.Tensor:
    """(B,) x (B,) x (B, A) x (B,) -> (B,): r + discount Q(s', a') for the next action taken."""
    return rewards + discounts * next_q.gather(-1, next_actions[:, None]).squeeze(-1)


def expected_sarsa_target(rewards: torch.Tensor, discounts: torch.Tensor, next_q: torch.Tensor,
                          next_probs: torch.Tensor) -> torch.Tensor:
    """(B,) x (B,) x (B, A) x (B, A) -> (B,): r + discount sum_a' pi(a'|s') Q(s', a')."""
    return rewards + discounts * (next_probs * next_q).sum(-1)


def double_q_target(rewards: torch.Tensor, discounts: torch.Tensor, next_q_online: torch.Tensor,
                    next_q_target: torch.Tensor) -> torch.Tensor:
    """(B,) x (B,) x (B, A) x (B, A) -> (B,): the target network's value of the online argmax."""
    best = next_q_online.argmax(-1, keepdim=True)
    return rewards + discounts * next_q_target.gather(-1, best).squeeze(-1)


def soft_value(q: torch.Tensor, ref_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """(..., A) x (..., A) -> (...): beta log sum_a pi0(a|s) exp(Q(s, a) / beta); max_a Q as beta -> 0."""
    return beta * torch.logsumexp(ref_logprobs + q / beta, dim=-1)


def soft_q_target(rewards: torch.Tensor, discounts: torch.Tensor, next_q: torch.Tensor,
                  next_ref_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """(B,) x (B,) x (B, A) x (B, A) -> (B,): r + discount V_soft(s') with the KL penalty to pi0."""
    return rewards + discounts * soft_value(next_q, next_ref_logprobs, beta)


def soft_policy(q: torch.Tensor, ref_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """(..., A) -> (..., A) log pi(a|s) = log pi0(a|s) + Q(s, a) / beta - log Z(s)."""
    return (ref_logprobs + q / beta).log_softmax(-1)


def soft_log_ratio(q: torch.Tensor, actions: torch.Tensor, ref_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """(B, A) x (B,) x (B, A) -> (B,): beta log pi(a|s) / pi0(a|s) = Q(s, a) - V_soft(s) for the soft policy
    pi = pi0 exp(Q / beta) / Z (:func:`soft_policy`): what an action pays in E[r] - beta KL(pi || pi0)."""
    return q.gather(-1, actions[:, None]).squeeze(-1) - soft_value(q, ref_logprobs, beta)


def n_step_return(rewards: torch.Tensor, discounts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) x (B, T) -> (B,), (B,): the rewards of an n-step return and the discount of its bootstrap,

        G = r_0 + d_0 r_1 + d_0 d_1 r_2 + ... + (d_0 ... d_{T-2}) r_{T-1},     D = d_0 d_1 ... d_{T-1},

    so that ``y = G + D * value(s_T)`` (Sutton & Barto 2018, eq. 7.1, with per-step discounts: a 0 at a
    termination cuts the rest). Returns shorter than T (an episode's last steps) pad with reward 0 and
    discount 1.
    """
    through = torch.cumprod(discounts, dim=-1)
    before = torch.cat([torch.ones_like(through[..., :1]), through[..., :-1]], dim=-1)
    return (before * rewards).sum(-1), through[..., -1]


def td_error(q: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, A) x (B,) x (B,) -> (B,): y - Q(s, a), for the update Q(s, a) <- Q(s, a) + alpha (y - Q(s, a))."""
    return targets - q.gather(-1, actions[:, None]).squeeze(-1)
