"""Temporal-difference targets for action values (Sutton & Barto 2018, ch. 6), batched: B transitions
with A actions. ``discount`` is gamma for a transition whose next state continues the episode and 0 for
one that ends it (as in `langrl.rl.returns.gae`), so terminal transitions need no special case.

    Q-learning        y = r + discount * max_a' Q(s', a')                   (Watkins 1989)
    SARSA             y = r + discount * Q(s', a')  for the action a' taken (Rummery & Niranjan 1994)
    expected SARSA    y = r + discount * sum_a' pi(a'|s') Q(s', a')         (van Seijen et al. 2009)
    double Q          y = r + discount * Q_target(s', argmax_a' Q_online(s', a'))   (van Hasselt 2010)
    soft (KL to pi0)  y = r + discount * V_soft(s'),
                      V_soft(s) = beta log sum_a pi0(a|s) exp(Q(s, a) / beta)

The soft backup maximises E[r] - beta KL(pi || pi0) per step; its optimum is the posterior policy
``pi*(a|s) = pi0(a|s) exp(Q*(s, a) / beta) / Z(s)`` (:func:`soft_policy`), the same pi* that
`langrl.bayes` computes over whole sequences.
"""

from __future__ import annotations

import torch


def q_learning_target(rewards: torch.Tensor, discounts: torch.Tensor, next_q: torch.Tensor) -> torch.Tensor:
    """(B,) x (B,) x (B, A) -> (B,): r + discount max_a' Q(s', a')."""
    return rewards + discounts * next_q.max(-1).values


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


def td_error(q: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, A) x (B,) x (B,) -> (B,): y - Q(s, a), for the update Q(s, a) <- Q(s, a) + alpha (y - Q(s, a))."""
    return targets - q.gather(-1, actions[:, None]).squeeze(-1)
