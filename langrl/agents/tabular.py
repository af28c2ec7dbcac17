"""Tabular value-based RL on discrete Gymnasium environments (FrozenLake, CliffWalking, Taxi, ...):
the exact oracle from the environment's own model, and TD learners that act in the environment.

Oracles (from ``env.unwrapped.P``, the transition table Gymnasium's toy-text environments expose):

    value iteration        Q*(s, a) = R(s, a) + gamma sum_s' C(s, a, s') max_a' Q*(s', a')
    soft value iteration   Q*(s, a) = R(s, a) + gamma sum_s' C(s, a, s') V*(s'),
                           V*(s) = beta log sum_a pi0(a|s) exp(Q*(s, a) / beta)

with C the probability of reaching s' *and continuing* (a terminating transition has no future).

Learners (Sutton & Barto 2018, ch. 6; the targets are `langrl.rl.td`'s pure functions): one table Q,
N vectorised environments stepping together, and for each of their transitions

    Q(s, a) <- Q(s, a) + alpha(n(s, a)) [y - Q(s, a)],     alpha(n) = alpha0 / n^omega

with y the method's target (:data:`METHODS`). Transitions of one batch that share (s, a) apply the mean
of their TD errors, so a batch never overshoots a single update. Exploration is epsilon-greedy
(linearly decayed) or Boltzmann, from `langrl.agents.exploration`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from langrl.errors import ConfigError
from langrl.rl.td import expected_sarsa_target, q_learning_target, sarsa_target, soft_policy, soft_q_target


@dataclass(frozen=True)
class TabularModel:
    """An environment's exact model, sparse: R (S, A) expected rewards, and for each transition k that
    continues the episode, its (state, action) as ``sa[k] = s * A + a``, its next state and probability."""

    R: torch.Tensor
    sa: torch.Tensor
    next_state: torch.Tensor
    prob: torch.Tensor

    def expected_next(self, values: torch.Tensor) -> torch.Tensor:
        """(S,) values of next states -> (S, A) sum_s' C(s, a, s') V(s')."""
        out = torch.zeros(self.R.numel(), dtype=values.dtype)
        return out.index_add_(0, self.sa, self.prob * values[self.next_state]).view_as(self.R)


def tabular_model(env: gym.Env) -> TabularModel:
    """The model of a toy-text environment, read from ``env.unwrapped.P[s][a] = [(p, s', r, done), ...]``."""
    table = getattr(env.unwrapped, "P", None)
    if not isinstance(table, dict):
        raise ConfigError(f"env {env.spec.id if env.spec else env!r} exposes no transition table (P); exact "
                          f"oracles need a toy-text environment such as FrozenLake-v1, CliffWalking-v1, Taxi-v4")
    n_a = len(table[0])
    R = torch.zeros(len(table), n_a, dtype=torch.float64)
    sa, nxt, prob = [], [], []
    for s, actions in table.items():
        for a, outcomes in actions.items():
            for p, s2, r, done in outcomes:
                R[s, a] += p * r
                if not done:
                    sa.append(s * n_a + a)
                    nxt.append(int(s2))
                    prob.append(p)
    return TabularModel(R, torch.tensor(sa, dtype=torch.long), torch.tensor(nxt, dtype=torch.long),
                        torch.tensor(prob, dtype=torch.float64))


def value_iteration(model: TabularModel, gamma: float, tol: float = 1e-12, max_iter: int = 100_000) -> torch.Tensor:
    """Q* (S, A) by iterating the Bellman optimality backup until it moves less than ``tol``."""
    return fixed_point(lambda q: model.R + gamma * model.expected_next(q.max(-1).values), model.R, tol, max_iter)


def soft_value_iteration(model: TabularModel, gamma: float, beta: float, ref_logprobs: torch.Tensor,
                         tol: float = 1e-12, max_iter: int = 100_000) -> torch.Tensor:
    """The KL-regularised optimum: Q* (S, A) of the soft backup to the reference policy pi0 (``ref_logprobs``
    (S, A)); the optimal policy is `langrl.rl.td.soft_policy`."""
    def backup(q: torch.Tensor) -> torch.Tensor:
        return model.R + gamma * model.expected_next(beta * torch.logsumexp(ref_logprobs + q / beta, -1))

    return fixed_point(backup, model.R, tol, max_iter)


def fixed_point(backup: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, tol: float,
                max_iter: int) -> torch.Tensor:
    q = start.clone()
    for _ in range(max_iter):
        nxt = backup(q)
        if float((nxt - q).abs().max()) < tol:
            return nxt
        q = nxt
    raise RuntimeError(f"value iteration did not converge to {tol} in {max_iter} iterations (gamma = 1 with "
                       f"a policy that never terminates?)")


# ---------------------------------------------------------------------------------------------- learners

@dataclass
class Transitions:
    """One batch of N transitions as the targets need them, all (N,) or (N, A)."""

    rewards: torch.Tensor
    discounts: torch.Tensor       # gamma, or 0 where the episode terminated
    next_q: torch.Tensor          # (N, A) Q(s', .)
    next_actions: torch.Tensor    # the actions the behaviour policy takes in s'
    next_probs: torch.Tensor      # (N, A) the target policy in s' (expected SARSA)
    next_ref_logprobs: torch.Tensor  # (N, A) log pi0(. | s') (soft Q)
    beta: float


METHODS: dict[str, Callable[[Transitions], torch.Tensor]] = {
    "q_learning": lambda b: q_learning_target(b.rewards, b.discounts, b.next_q),
    "sarsa": lambda b: sarsa_target(b.rewards, b.discounts, b.next_q, b.next_actions),
    "expected_sarsa": lambda b: expected_sarsa_target(b.rewards, b.discounts, b.next_q, b.next_probs),
    "soft_q": lambda b: soft_q_target(b.rewards, b.discounts, b.next_q, b.next_ref_logprobs, b.beta),
}


@dataclass
class TabularResult:
    """The learned table, the visit counts, and the return of every episode that ended while learning."""

    q: torch.Tensor
    counts: torch.Tensor
    episode_returns: list[float] = field(default_factory=list)


def epsilon_greedy_probs(q: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(N, A) -> (N, A): 1 - epsilon on the greedy action (ties split), epsilon spread uniformly."""
    best = (q == q.max(-1, keepdim=True).values).to(q.dtype)
    return (1 - epsilon) * best / best.sum(-1, keepdim=True) + epsilon / q.size(-1)


def learn(make: Callable[[], gym.Env], method: str, gamma: float, steps: int, num_envs: int = 8,
          epsilon: tuple[float, float, float] = (1.0, 0.1, 0.5), alpha0: float = 1.0, omega: float = 0.6,
          beta: float = 1.0, ref_logprobs: torch.Tensor | None = None, seed: int = 0) -> TabularResult:
    """Learn Q with ``method`` (a key of :data:`METHODS`) from ``steps`` environment steps in total.

    ``epsilon = (start, end, fraction)``: epsilon-greedy decayed linearly from start to end over that
    fraction of the steps (SARSA and expected SARSA learn the value of this behaviour; Q-learning learns
    Q* from it). ``soft_q`` backs up to pi0 = ``ref_logprobs`` (S, A), uniform by default, at ``beta``.
    Truncated episodes bootstrap from their last state; terminated ones do not.
    """
    if method not in METHODS:
        raise ConfigError(f"method = {method!r}: unknown; allowed: {', '.join(METHODS)}")
    envs = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    n_s, n_a = int(envs.single_observation_space.n), int(envs.single_action_space.n)  # type: ignore[attr-defined]
    ref = ref_logprobs if ref_logprobs is not None else torch.full((n_s, n_a), -np.log(n_a), dtype=torch.float64)
    q, counts = torch.zeros(n_s, n_a, dtype=torch.float64), torch.zeros(n_s, n_a, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    result = TabularResult(q=q, counts=counts)
    running = np.zeros(num_envs)
    obs = torch.as_tensor(envs.reset(seed=seed)[0])
    updates = max(1, steps // num_envs)

    def behaviour(states: torch.Tensor, t: int) -> torch.Tensor:
        start, end, fraction = epsilon
        eps = start + (end - start) * min(1.0, t / max(1.0, fraction * updates))
        return epsilon_greedy_probs(q[states], eps)

    actions = torch.multinomial(behaviour(obs, 0), 1, generator=generator).squeeze(-1)
    for t in range(updates):
        nxt, reward, terminated, truncated, info = envs.step(actions.numpy())
        nxt_t = torch.as_tensor(nxt)
        done = torch.as_tensor(terminated | truncated)
        # SAME_STEP autoreset: where an episode ended, nxt is the next episode's first state
        last = torch.as_tensor(np.where(terminated | truncated, info.get("final_obs", nxt), nxt).astype(np.int64))
        probs_next = behaviour(last, t + 1)
        next_actions = torch.multinomial(probs_next, 1, generator=generator).squeeze(-1)
        batch = Transitions(rewards=torch.as_tensor(reward, dtype=torch.float64),
                            discounts=gamma * (1.0 - torch.as_tensor(terminated, dtype=torch.float64)),
                            next_q=q[last], next_actions=next_actions, next_probs=probs_next,
                            next_ref_logprobs=ref[last], beta=beta)
        td = METHODS[method](batch) - q[obs, actions]
        update(q, counts, obs, actions, td, alpha0, omega)
        running += reward
        for i in np.flatnonzero(done.numpy()):
            result.episode_returns.append(float(running[i]))
            running[i] = 0.0
        # the next step acts in the new states: the next episode's first state where one ended
        obs = nxt_t
        actions = torch.where(done, torch.multinomial(behaviour(obs, t + 1), 1, generator=generator).squeeze(-1),
                              next_actions)
    envs.close()
    return result


def update(q: torch.Tensor, counts: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, td: torch.Tensor,
           alpha0: float, omega: float) -> None:
    """Q(s, a) += alpha(n(s, a)) * mean of the batch's TD errors at (s, a); n counts every visit."""
    flat = states * q.size(1) + actions
    visits = torch.zeros(q.numel(), dtype=q.dtype).index_add_(0, flat, torch.ones_like(td))
    td_sum = torch.zeros(q.numel(), dtype=q.dtype).index_add_(0, flat, td)
    seen = visits > 0
    counts.view(-1)[seen] += visits[seen]
    alpha = alpha0 / counts.view(-1)[seen] ** omega
    q.view(-1)[seen] += alpha * td_sum[seen] / visits[seen]


def greedy_policy(q: torch.Tensor) -> torch.Tensor:
    """(S, A) -> (S,) the first best action of each state."""
    return q.argmax(-1)


__all__ = ["METHODS", "TabularModel", "TabularResult", "learn", "soft_policy", "soft_value_iteration",
           "tabular_model", "value_iteration"]
