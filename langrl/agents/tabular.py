"""Tabular value-based RL on discrete Gymnasium environments (FrozenLake, CliffWalking, Taxi, the token
MDP of `langrl.envs.token_mdp`): exact oracles from the environment's own model, and TD learners that act
in the environment.

Oracles (from ``env.unwrapped.P``, the transition table Gymnasium's toy-text environments expose):

    value iteration        Q*(s, a) = R(s, a) + gamma sum_s' C(s, a, s') max_a' Q*(s', a')
    soft value iteration   Q*(s, a) = R(s, a) + gamma sum_s' C(s, a, s') V*(s'),
                           V*(s) = beta log sum_a pi0(a|s) exp(Q*(s, a) / beta)
    policy evaluation      Q^pi(s, a) = R(s, a) + gamma sum_s' C(s, a, s') sum_a' pi(a'|s') Q^pi(s', a')

with C the probability of reaching s' *and continuing* (a terminating transition has no future).

Learners (Sutton & Barto 2018, ch. 6 and 7; the targets are `langrl.rl.td`'s pure functions): a table Q
(two for double Q-learning), N environments stepping together, and for each transition that leaves the
per-environment buffer of the last ``n_step`` transitions (the oldest once it is full, all of them when
an episode ends)

    Q(s, a) <- Q(s, a) + alpha(n(s, a)) [y - Q(s, a)],     alpha(n) = alpha0 / n^omega

with y the method's target (:data:`METHODS`) bootstrapped n steps later. Transitions of one batch that
share (s, a) apply the mean of their TD errors, so a batch never overshoots a single update. Behaviour
(:data:`BEHAVIOURS`): epsilon-greedy or Boltzmann with a linear schedule, or UCB on visit counts.
:class:`TabularLearner` holds all the state, advances in chunks and pickles, so a run checkpointed and
resumed continues bit for bit; :func:`learn` runs one to the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from langrl.agents.exploration import linear_schedule
from langrl.errors import ConfigError
from langrl.rl.td import (
    double_q_target,
    expected_sarsa_target,
    n_step_return,
    q_learning_target,
    sarsa_target,
    soft_log_ratio,
    soft_policy,
    soft_q_target,
)


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
    return fixed_point(lambda q: model.R + gamma * model.expected_next(q.amax(-1)), model.R, tol, max_iter)


def soft_value_iteration(model: TabularModel, gamma: float, beta: float, ref_logprobs: torch.Tensor,
                         tol: float = 1e-12, max_iter: int = 100_000) -> torch.Tensor:
    """The KL-regularised optimum: Q* (S, A) of the soft backup to the reference policy pi0 (``ref_logprobs``
    (S, A)); the optimal policy is `langrl.rl.td.soft_policy`."""
    def backup(q: torch.Tensor) -> torch.Tensor:
        return model.R + gamma * model.expected_next(beta * torch.logsumexp(ref_logprobs + q / beta, -1))

    return fixed_point(backup, model.R, tol, max_iter)


def policy_evaluation(model: TabularModel, gamma: float, policy: torch.Tensor, tol: float = 1e-12,
                      max_iter: int = 100_000) -> torch.Tensor:
    """Q^pi (S, A) of the fixed policy ``policy`` (S, A) (probabilities), by iterating its Bellman backup:
    what SARSA and expected SARSA learn when they follow pi."""
    return fixed_point(lambda q: model.R + gamma * model.expected_next((policy * q).sum(-1)), model.R, tol,
                       max_iter)


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


# ---------------------------------------------------------------------------------------------- behaviour

def epsilon_greedy_probs(q: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(N, A) -> (N, A): 1 - epsilon on the greedy action (ties split), epsilon spread uniformly; the
    probabilities of `langrl.agents.exploration.epsilon_greedy`, which the expected-SARSA target needs."""
    best = (q == q.amax(-1, keepdim=True)).to(q.dtype)
    return (1 - epsilon) * best / best.sum(-1, keepdim=True) + epsilon / q.size(-1)


def boltzmann_probs(q: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, A) -> (N, A): softmax(Q / temperature), as `langrl.agents.exploration.softmax`."""
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature}; it must be > 0")
    # spelled out: torch's softmax kernel splits even an (N, A) tensor across threads, which costs
    # milliseconds per call when the cores are busy; amax, exp and sum on so few entries do not
    e = (q / temperature - (q / temperature).amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def ucb_probs(q: torch.Tensor, visits: torch.Tensor, c: float) -> torch.Tensor:
    """(N, A) x (N, A) -> (N, A): uniform over the maximisers of the UCB score of each state,

        Q(s, a) + c sqrt(ln N(s) / n(s, a)),    N(s) = sum_a n(s, a),    +inf where n(s, a) = 0,

    `langrl.agents.exploration.ucb_scores` (UCB1, Auer et al. 2002) with the state's own visit count as
    the clock. Ties are broken at random, not by index, so N environments in one state spread over its
    untried actions instead of all taking the first."""
    total = visits.sum(-1, keepdim=True).clamp(min=1)
    bonus = c * torch.sqrt(torch.log(total) / visits.clamp(min=1))
    scores = torch.where(visits > 0, q + bonus, torch.full_like(q, math.inf))
    best = (scores == scores.amax(-1, keepdim=True)).to(q.dtype)
    return best / best.sum(-1, keepdim=True)


# The behaviour policy's probabilities in states with values q and visit counts n, at the schedule's value.
BEHAVIOURS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "epsilon": lambda q, n, epsilon: epsilon_greedy_probs(q, epsilon),
    "boltzmann": lambda q, n, temperature: boltzmann_probs(q, temperature),
    "ucb": ucb_probs,
}
# The metric that logs each behaviour's parameter.
BEHAVIOUR_PARAMETER = {"epsilon": "explore/epsilon", "boltzmann": "explore/temperature", "ucb": "explore/ucb_c"}


@dataclass(frozen=True)
class Exploration:
    """How the learner acts (a key of :data:`BEHAVIOURS`).

    :param kind: ``epsilon`` (epsilon-greedy), ``boltzmann`` (softmax of Q / temperature) or ``ucb``.
    :param start: epsilon or temperature at the first step.
    :param end: epsilon or temperature after ``fraction`` of the learner's steps (linear in between).
    :param fraction: share of the steps over which the schedule moves from ``start`` to ``end``.
    :param c: UCB's bonus scale (UCB has no schedule).
    """

    kind: str = "epsilon"
    start: float = 1.0
    end: float = 0.1
    fraction: float = 0.5
    c: float = 1.0

    def parameter(self, env_steps: int, total_steps: int) -> float:
        """The epsilon, temperature or c after ``env_steps`` of ``total_steps``."""
        if self.kind == "ucb":
            return self.c
        return linear_schedule(env_steps, self.start, self.end, int(self.fraction * total_steps))


# ---------------------------------------------------------------------------------------------- targets

@dataclass
class Transitions:
    """B transitions leaving the n-step buffers, as the targets need them, all (B,) or (B, A): ``rewards`` and
    ``discounts`` are the n-step return's G and D (`langrl.rl.td.n_step_return`), the rest is taken at the
    state s_n the return bootstraps from."""

    rewards: torch.Tensor
    discounts: torch.Tensor       # gamma^n, or 0 where the episode terminated within the n steps
    next_q: torch.Tensor          # (B, A) Q(s_n, .) of the table being updated
    next_q_other: torch.Tensor    # (B, A) the other table (double Q-learning; else the same)
    next_actions: torch.Tensor    # the action the behaviour takes in s_n (SARSA)
    next_probs: torch.Tensor      # (B, A) the behaviour policy in s_n (expected SARSA)
    next_ref_logprobs: torch.Tensor  # (B, A) log pi0(. | s_n) (soft Q)
    beta: float


METHODS: dict[str, Callable[[Transitions], torch.Tensor]] = {
    "q_learning": lambda b: q_learning_target(b.rewards, b.discounts, b.next_q),
    "sarsa": lambda b: sarsa_target(b.rewards, b.discounts, b.next_q, b.next_actions),
    "expected_sarsa": lambda b: expected_sarsa_target(b.rewards, b.discounts, b.next_q, b.next_probs),
    "soft_q": lambda b: soft_q_target(b.rewards, b.discounts, b.next_q, b.next_ref_logprobs, b.beta),
    # van Hasselt 2010: the updated table picks the action, the other one values it
    "double_q": lambda b: double_q_target(b.rewards, b.discounts, b.next_q, b.next_q_other),
}
TABLES = {"double_q": 2}  # tables a method keeps (1 unless named)


@dataclass
class NStepBatch:
    """Transitions leaving the buffers: ``env`` (B,) where each came from; (B, n) its states, actions,
    rewards and discounts from itself onwards, padded (reward 0, discount 1, ``valid`` False) past the
    buffer's end."""

    env: torch.Tensor
    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    discounts: torch.Tensor
    valid: torch.Tensor


class NStepBuffer:
    """The last n transitions of each of N environments, oldest first, and how many each holds (numpy: a
    few small index operations a step, cheaper there than in torch)."""

    def __init__(self, num_envs: int, n: int):
        self.n = n
        self.states = np.zeros((num_envs, n), dtype=np.int64)
        self.actions = np.zeros((num_envs, n), dtype=np.int64)
        self.rewards = np.zeros((num_envs, n))
        self.discounts = np.zeros((num_envs, n))
        self.filled = np.zeros(num_envs, dtype=np.int64)

    def push(self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor,
             done: torch.Tensor) -> NStepBatch:
        """Append one transition per environment; return those whose n-step return is now complete: the
        oldest of a full buffer, and every buffered one where the episode ended (their returns are shorter)."""
        n = self.n
        if n == 1:  # one-step returns: every transition leaves at once, nothing is kept
            return NStepBatch(env=torch.arange(len(states)), states=states[:, None], actions=actions[:, None],
                              rewards=rewards[:, None], discounts=discounts[:, None],
                              valid=torch.ones(len(states), 1, dtype=torch.bool))
        rows, ended = np.arange(len(states)), done.numpy()
        at = self.filled
        self.states[rows, at], self.actions[rows, at] = states.numpy(), actions.numpy()
        self.rewards[rows, at], self.discounts[rows, at] = rewards.numpy(), discounts.numpy()
        filled = at + 1
        full = filled == n
        offsets = np.arange(n)
        leaving = (ended[:, None] & (offsets[None] < filled[:, None])) | \
            ((full & ~ended)[:, None] & (offsets[None] == 0))
        env, first = leaving.nonzero()
        index = first[:, None] + offsets[None]           # (B, n) from each leaving transition onwards
        valid = index < filled[env][:, None]
        index = np.minimum(index, n - 1)
        pick = (env[:, None], index)
        batch = NStepBatch(env=torch.from_numpy(env), states=torch.from_numpy(self.states[pick]),
                           actions=torch.from_numpy(self.actions[pick]),
                           rewards=torch.from_numpy(np.where(valid, self.rewards[pick], 0.0)),
                           discounts=torch.from_numpy(np.where(valid, self.discounts[pick], 1.0)),
                           valid=torch.from_numpy(valid))
        slide = full & ~ended                             # drop the oldest: shift the rest left
        for table in (self.states, self.actions, self.rewards, self.discounts):
            table[slide] = np.roll(table[slide], -1, axis=1)
        self.filled = np.where(ended, 0, np.where(slide, n - 1, filled))
        return batch


# ---------------------------------------------------------------------------------------------- learner

@dataclass
class TabularResult:
    """The learned table (the mean of both for double Q-learning), the update counts n(s, a) summed over
    tables, the behaviour's visit counts, and the return of every episode that ended while learning."""

    q: torch.Tensor
    counts: torch.Tensor
    visits: torch.Tensor | None = None
    episode_returns: list[float] = field(default_factory=list)


def discrete_size(space: gym.Space, what: str, env: gym.Env) -> int:
    """The number of values of a Discrete space, else a ConfigError naming the environment."""
    if not isinstance(space, gym.spaces.Discrete):
        name = env.spec.id if env.spec else type(env.unwrapped).__name__
        raise ConfigError(f"env {name}: its {what} space is {space}; tabular methods need Discrete observations "
                          f"and actions (e.g. FrozenLake-v1, CliffWalking-v1, Taxi-v4)")
    return int(space.n)


class TabularLearner:
    """A tabular TD learner and everything it needs to continue: tables, counts, environments mid-episode,
    n-step buffers, random generator, step counter. ``advance`` runs a chunk of steps; the object pickles,
    and a pickled learner advanced further computes exactly what the original would have.

    :param make: builds one environment (Discrete observations and actions).
    :param method: a key of :data:`METHODS`.
    :param gamma: discount per step.
    :param steps: the run's planned environment steps, the horizon of the exploration schedule.
    :param num_envs: environments stepping together (environment i is first reset with seed ``seed + i``).
    :param exploration: the behaviour policy and its schedule.
    :param alpha0, omega: step size ``alpha0 / n(s, a)^omega`` (omega in (0.5, 1] for convergence with
        stochastic targets; 0 keeps it constant, exact with alpha0 = 1 on deterministic tasks).
    :param beta: soft Q's KL weight; ``ref_logprobs`` (S, A) its reference pi0 (uniform by default).
    :param n_step: steps of the return before bootstrapping.
    :param seed: seeds the environments and the generator (actions, double Q's choice of table).
    """

    def __init__(self, make: Callable[[], gym.Env], method: str, gamma: float, steps: int, num_envs: int = 8,
                 exploration: Exploration | None = None, alpha0: float = 1.0, omega: float = 0.6,
                 beta: float = 1.0, ref_logprobs: torch.Tensor | None = None, n_step: int = 1, seed: int = 0):
        if method not in METHODS:
            raise ConfigError(f"method = {method!r}: unknown; allowed: {', '.join(METHODS)}")
        self.exploration = exploration or Exploration()
        if self.exploration.kind not in BEHAVIOURS:
            raise ConfigError(f"exploration.kind = {self.exploration.kind!r}: unknown; allowed: "
                              f"{', '.join(BEHAVIOURS)}")
        if n_step < 1 or num_envs < 1:
            raise ConfigError(f"n_step = {n_step}, num_envs = {num_envs}: both must be >= 1")
        self.method, self.gamma, self.total_steps, self.n_step = method, gamma, steps, n_step
        self.alpha0, self.omega, self.beta = alpha0, omega, beta
        self.envs = [make() for _ in range(num_envs)]
        n_s = discrete_size(self.envs[0].observation_space, "observation", self.envs[0])
        n_a = discrete_size(self.envs[0].action_space, "action", self.envs[0])
        self.ref = ref_logprobs if ref_logprobs is not None else torch.full((n_s, n_a), -math.log(n_a),
                                                                            dtype=torch.float64)
        if self.ref.shape != (n_s, n_a):
            raise ConfigError(f"ref_logprobs has shape {tuple(self.ref.shape)}; the env needs ({n_s}, {n_a})")
        k = TABLES.get(method, 1)
        self.tables = torch.zeros(k, n_s, n_a, dtype=torch.float64)
        self.counts = torch.zeros(k, n_s, n_a, dtype=torch.float64)
        self.visits = torch.zeros(n_s, n_a, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)
        self.env_steps = 0
        self.episode_returns: list[float] = []
        self.running = np.zeros(num_envs)
        self.buffer = NStepBuffer(num_envs, n_step)
        self.obs = torch.tensor([int(env.reset(seed=seed + i)[0]) for i, env in enumerate(self.envs)])
        self.actions = self.sample(self.behaviour(self.obs))

    @property
    def q(self) -> torch.Tensor:
        """(S, A) the estimate: the table, or the mean of double Q-learning's two."""
        return self.tables.mean(0) if len(self.tables) > 1 else self.tables[0]

    def q_rows(self, states: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N, A) the estimate in ``states`` (without touching the rest of the tables)."""
        return self.tables[:, states].mean(0) if len(self.tables) > 1 else self.tables[0, states]

    def parameter(self) -> float:
        """The behaviour's epsilon, temperature or c now."""
        return self.exploration.parameter(self.env_steps, self.total_steps)

    def behaviour(self, states: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N, A) the behaviour policy's probabilities (on the mean of the tables)."""
        return BEHAVIOURS[self.exploration.kind](self.q_rows(states), self.visits[states], self.parameter())

    def sample(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)

    def advance(self, env_steps: int) -> dict[str, float]:
        """Run ``ceil(env_steps / num_envs)`` steps of every environment; return the chunk's metrics:
        ``env/steps`` (so far), the mean return and number of the episodes that ended in it, the mean |TD
        error| of its updates, the exploration parameter."""
        before = len(self.episode_returns)
        td_sum, td_count = 0.0, 0
        for _ in range(-(-env_steps // len(self.envs))):
            td = self.step()
            td_sum, td_count = td_sum + float(td.abs().sum()), td_count + td.numel()
        finished = self.episode_returns[before:]
        metrics = {"env/steps": float(self.env_steps), "rollout/episodes": float(len(finished)),
                   BEHAVIOUR_PARAMETER[self.exploration.kind]: self.parameter()}
        if finished:
            metrics["rollout/episode_return"] = float(np.mean(finished))
        if td_count:
            metrics["td/abs_error"] = td_sum / td_count
        return metrics

    def step(self) -> torch.Tensor:
        """One step of every environment, then the updates of the transitions whose returns are complete;
        returns their TD errors."""
        acting, actions = self.obs, self.actions
        self.visits.index_put_((acting, actions), torch.ones(len(acting), dtype=torch.float64), accumulate=True)
        reached, first, rewards, terminated, done = self.step_envs(actions)
        self.env_steps += len(self.envs)
        probs = self.behaviour(reached)
        next_actions = self.sample(probs)
        batch = self.buffer.push(acting, actions, rewards, self.gamma * (1.0 - terminated.double()), done)
        td = self.update(batch, reached, next_actions, probs)
        # the next step acts in the next episode's first state where one ended
        self.obs = torch.where(done, first, reached)
        self.actions = next_actions
        if bool(done.any()):
            self.actions[done] = self.sample(self.behaviour(self.obs[done]))
        return td

    def step_envs(self, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Step each environment; reset those whose episode ended. Returns the states reached, the first
        states of new episodes (the reached ones elsewhere), rewards, terminated, done (terminated or
        truncated)."""
        n = len(self.envs)
        reached, first = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        rewards, terminated, done = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for i, (env, action) in enumerate(zip(self.envs, actions.tolist(), strict=True)):
            state, reward, term, trunc, _ = env.step(action)
            reached[i] = first[i] = int(state)
            rewards[i], terminated[i], done[i] = float(reward), bool(term), bool(term or trunc)
            self.running[i] += float(reward)
            if done[i]:
                self.episode_returns.append(float(self.running[i]))
                self.running[i] = 0.0
                first[i] = int(env.reset()[0])
        return (torch.from_numpy(reached), torch.from_numpy(first), torch.from_numpy(rewards),
                torch.from_numpy(terminated), torch.from_numpy(done))

    def update(self, batch: NStepBatch, reached: torch.Tensor, next_actions: torch.Tensor,
               probs: torch.Tensor) -> torch.Tensor:
        """Apply the targets of the transitions leaving the buffers (bootstrapped from the states just
        reached); returns their TD errors (B,)."""
        if len(batch.env) == 0:
            return torch.zeros(0, dtype=torch.float64)
        rewards = batch.rewards
        if self.method == "soft_q" and self.n_step > 1:  # every reward after the first pays its KL term
            later = batch.valid.clone()
            later[:, 0] = False
            s, a = batch.states[later], batch.actions[later]
            rewards = rewards.clone()
            rewards[later] -= soft_log_ratio(self.tables[0][s], a, self.ref[s], self.beta)
        returns, discounts = n_step_return(rewards, batch.discounts) if self.n_step > 1 else \
            (rewards[:, 0], batch.discounts[:, 0])
        k = len(self.tables)
        table = (torch.rand(len(batch.env), generator=self.generator) < 0.5).long() if k > 1 \
            else torch.zeros(len(batch.env), dtype=torch.long)
        boot = reached[batch.env]
        targets = METHODS[self.method](Transitions(
            rewards=returns, discounts=discounts, next_q=self.tables[table, boot],
            next_q_other=self.tables[(1 - table) % k, boot], next_actions=next_actions[batch.env],
            next_probs=probs[batch.env], next_ref_logprobs=self.ref[boot], beta=self.beta))
        states, actions = batch.states[:, 0], batch.actions[:, 0]
        td = targets - self.tables[table, states, actions]
        for i in range(k):
            mine = table == i
            update(self.tables[i], self.counts[i], states[mine], actions[mine], td[mine], self.alpha0, self.omega)
        return td

    def result(self) -> TabularResult:
        return TabularResult(q=self.q.clone(), counts=self.counts.sum(0), visits=self.visits.clone(),
                             episode_returns=list(self.episode_returns))

    def close(self) -> None:
        for env in self.envs:
            env.close()


def learn(make: Callable[[], gym.Env], method: str, gamma: float, steps: int, num_envs: int = 8,
          epsilon: tuple[float, float, float] = (1.0, 0.1, 0.5), alpha0: float = 1.0, omega: float = 0.6,
          beta: float = 1.0, ref_logprobs: torch.Tensor | None = None, seed: int = 0,
          exploration: Exploration | None = None, n_step: int = 1) -> TabularResult:
    """Learn Q with ``method`` (a key of :data:`METHODS`) from ``steps`` environment steps in total.

    ``epsilon = (start, end, fraction)``: epsilon-greedy decayed linearly from start to end over that
    fraction of the steps, unless ``exploration`` says otherwise (SARSA and expected SARSA learn the value
    of this behaviour; Q-learning learns Q* from it). ``soft_q`` backs up to pi0 = ``ref_logprobs`` (S, A),
    uniform by default, at ``beta``. Truncated episodes bootstrap from their last state; terminated ones
    do not. See :class:`TabularLearner` for the rest.
    """
    learner = TabularLearner(make, method, gamma, steps, num_envs, exploration or Exploration("epsilon", *epsilon),
                             alpha0, omega, beta, ref_logprobs, n_step, seed)
    learner.advance(steps)
    learner.close()
    return learner.result()


def update(q: torch.Tensor, counts: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, td: torch.Tensor,
           alpha0: float, omega: float) -> None:
    """Q(s, a) += alpha(n(s, a)) * mean of the batch's TD errors at (s, a); n counts every visit.

    Only the batch's own entries are touched: an operation over a whole table of more than 32768 entries
    (the token MDP's 4681 x 8) is split across torch's threads, which costs milliseconds per step on busy
    cores, where this costs microseconds."""
    flat, inverse = torch.unique(states * q.size(1) + actions, return_inverse=True)
    visits = torch.zeros(len(flat), dtype=q.dtype).index_add_(0, inverse, torch.ones_like(td))
    td_sum = torch.zeros(len(flat), dtype=q.dtype).index_add_(0, inverse, td)
    counts.view(-1)[flat] += visits
    q.view(-1)[flat] += alpha0 / counts.view(-1)[flat] ** omega * td_sum / visits


def greedy_policy(q: torch.Tensor) -> torch.Tensor:
    """(S, A) -> (S,) the first best action of each state."""
    return q.argmax(-1)


__all__ = ["BEHAVIOURS", "METHODS", "Exploration", "TabularLearner", "TabularModel", "TabularResult",
           "boltzmann_probs", "epsilon_greedy_probs", "greedy_policy", "learn", "policy_evaluation", "soft_policy",
           "soft_value_iteration", "tabular_model", "ucb_probs", "value_iteration"]
