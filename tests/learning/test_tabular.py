"""Tier 3: tabular TD learners against the exact oracle computed from the environment's own model.

On visited states (the others keep their initial 0): Q-learning from uniform behaviour reaches Q*, soft
Q-learning the soft optimum of value iteration, and on CliffWalking SARSA's online returns beat
Q-learning's under the same epsilon-greedy behaviour (the safe path vs the optimal one next to the cliff,
Sutton & Barto 2018, Example 6.6). Double Q-learning reaches Q* and does not share Q-learning's
maximisation bias (Example 6.7); n-step SARSA and expected SARSA following the uniform policy reach its
exact Q^pi on the random walk of Example 7.1; n-step soft Q following its own soft policy reaches the
soft optimum; UCB and Boltzmann exploration reach Q*; a learner pickled mid-run continues bit for bit."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch

from langrl.agents.tabular import (
    Exploration,
    NStepBuffer,
    TabularLearner,
    greedy_policy,
    learn,
    policy_evaluation,
    soft_value_iteration,
    tabular_model,
    ucb_probs,
    value_iteration,
)
from langrl.errors import ConfigError
from langrl.rl.td import n_step_return, soft_policy


class RandomWalk(gym.Env):
    """Sutton & Barto 2018, Example 7.1 with actions: states 0..n-1 in a row, starting in the middle; left or
    right; stepping off the left end ends the episode with -1, off the right end with +1."""

    metadata = {"render_modes": []}

    def __init__(self, n: int = 5):
        self.observation_space, self.action_space = gym.spaces.Discrete(n), gym.spaces.Discrete(2)
        self.n, self.s = n, n // 2
        self.P = {s: {a: [self.outcome(s, a)] for a in (0, 1)} for s in range(n)}

    def outcome(self, s: int, a: int) -> tuple[float, int, float, bool]:
        nxt = s + (1 if a else -1)
        if 0 <= nxt < self.n:
            return 1.0, nxt, 0.0, False
        return 1.0, s, 1.0 if a else -1.0, True

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = self.n // 2
        return self.s, {}

    def step(self, action):
        _, self.s, reward, done = self.P[self.s][int(action)][0]
        return self.s, reward, done, False, {}


class MaximisationBias(gym.Env):
    """Sutton & Barto 2018, Example 6.7 with A actions in both states: in A (state 0) action 0 goes left to
    B (state 1), every other action ends the episode; in B every action ends it with a reward drawn from
    N(-0.1, 1). Going left is worth -0.1, the rest 0; P holds the expected rewards."""

    metadata = {"render_modes": []}

    def __init__(self, actions: int = 10):
        self.observation_space, self.action_space = gym.spaces.Discrete(3), gym.spaces.Discrete(actions)
        self.P = {0: {a: [(1.0, 1, 0.0, False) if a == 0 else (1.0, 2, 0.0, True)] for a in range(actions)},
                  1: {a: [(1.0, 2, -0.1, True)] for a in range(actions)},
                  2: {a: [(1.0, 2, 0.0, True)] for a in range(actions)}}
        self.s = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return 0, {}

    def step(self, action):
        if self.s == 0:
            self.s = 1 if action == 0 else 2
            return self.s, 0.0, self.s == 2, False, {}
        self.s = 2
        return 2, float(self.np_random.normal(-0.1, 1.0)), True, False, {}


def lake() -> gym.Env:
    return gym.make("FrozenLake-v1", is_slippery=False)


def cliff() -> gym.Env:
    return gym.make("CliffWalking-v1")


def visited(result) -> torch.Tensor:
    return result.counts.sum(-1) > 0


def regret(q_star: torch.Tensor, q: torch.Tensor, states: torch.Tensor) -> float:
    """How much worse, under Q*, the learned greedy action is than the best one (0: the same policy up to ties)."""
    chosen = q_star.gather(-1, greedy_policy(q)[:, None]).squeeze(-1)
    return float((q_star.max(-1).values - chosen)[states].max())


def test_value_iteration_on_cliffwalking_by_hand():
    q_star = value_iteration(tabular_model(cliff()), gamma=1.0)
    start = 36  # bottom left; the optimal path walks up, 11 steps right, down: 13 steps of -1
    assert float(q_star[start].max()) == pytest.approx(-13.0)
    assert float(q_star[start, 1]) == pytest.approx(-100.0 - 13.0)  # right: into the cliff, back to the start


def test_q_learning_reaches_q_star_on_cliffwalking():
    model = tabular_model(cliff())
    q_star = value_iteration(model, gamma=0.99)
    result = learn(cliff, "q_learning", gamma=0.99, steps=160_000, num_envs=32, epsilon=(1.0, 1.0, 1.0),
                   alpha0=1.0, omega=0.0, seed=0)  # deterministic transitions: alpha = 1 is exact
    seen = visited(result)
    assert int(seen.sum()) == 37  # every reachable state: 36 cells, the cliff cells never, the goal never left
    assert float((result.q - q_star).abs()[seen].max()) < 0.05
    assert regret(q_star, result.q, seen) == 0.0


def test_soft_q_learning_reaches_the_soft_optimum_and_its_posterior_policy():
    model = tabular_model(cliff())
    ref = torch.log_softmax(torch.randn(48, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    beta = 2.0
    q_star = soft_value_iteration(model, gamma=0.9, beta=beta, ref_logprobs=ref)
    result = learn(cliff, "soft_q", gamma=0.9, steps=160_000, num_envs=32, epsilon=(1.0, 1.0, 1.0), alpha0=1.0,
                   omega=0.0, beta=beta, ref_logprobs=ref, seed=0)
    seen = visited(result)
    assert float((result.q - q_star).abs()[seen].max()) < 0.05
    pi, pi_star = soft_policy(result.q, ref, beta).exp(), soft_policy(q_star, ref, beta).exp()
    assert float((pi - pi_star).abs()[seen].max()) < 0.01


def test_sarsa_walks_the_safe_path_q_learning_the_optimal_one():
    kwargs = dict(gamma=1.0, steps=40_000, num_envs=8, epsilon=(0.1, 0.1, 1.0), alpha0=0.5, omega=0.0, seed=0)
    sarsa, q_learning = learn(cliff, "sarsa", **kwargs), learn(cliff, "q_learning", **kwargs)
    late = slice(-200, None)  # the returns of the last episodes, once both have learned
    mean = {k: sum(r.episode_returns[late]) / len(r.episode_returns[late])
            for k, r in (("sarsa", sarsa), ("q_learning", q_learning))}
    assert mean["sarsa"] > mean["q_learning"] + 5, mean  # Q-learning's epsilon steps fall off the cliff
    start = 36
    # the greedy paths: Q-learning's first move from the start is up onto the edge row; so is SARSA's, but
    # SARSA's values price in the falls, so its value of the start is lower than Q-learning's (optimal) one
    assert float(sarsa.q[start].max()) < float(q_learning.q[start].max())


def test_unknown_method_and_env_without_a_model_are_config_errors():
    with pytest.raises(ConfigError, match="method = 'q_learnin': unknown; allowed: q_learning, sarsa"):
        learn(cliff, "q_learnin", gamma=0.9, steps=10)
    with pytest.raises(ConfigError, match="exposes no transition table"):
        tabular_model(gym.make("CartPole-v1"))


@pytest.mark.slow
@pytest.mark.parametrize(("env_id", "kwargs", "gamma", "steps", "omega"), [
    ("FrozenLake-v1", {"is_slippery": True}, 0.9, 300_000, 0.65),
    ("Taxi-v4", {}, 0.9, 300_000, 0.0),
])
def test_q_learning_reaches_q_star_on_frozenlake_and_taxi(env_id, kwargs, gamma, steps, omega):
    def make() -> gym.Env:
        return gym.make(env_id, **kwargs)

    q_star = value_iteration(tabular_model(make()), gamma)
    result = learn(make, "q_learning", gamma, steps, num_envs=16, epsilon=(1.0, 1.0, 1.0), alpha0=1.0,
                   omega=omega, seed=0)
    seen = visited(result)
    assert float((result.q - q_star).abs()[seen].max()) < 0.05
    assert regret(q_star, result.q, seen) == 0.0


# ---------------------------------------------------------------------------------------------- n-step

def test_n_step_return_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 5.0], [4.0, 0.0, 0.0]], dtype=torch.float64)
    discounts = torch.tensor([[0.9, 0.9, 0.9], [0.9, 0.0, 0.9], [0.5, 1.0, 1.0]], dtype=torch.float64)
    g, d = n_step_return(rewards, discounts)
    # 1 + .9 * 2 + .81 * 3; a termination after the 2nd reward cuts the 3rd; padding (0, 1) changes nothing
    assert g.tolist() == pytest.approx([5.23, 2.8, 4.0])
    assert d.tolist() == pytest.approx([0.729, 0.0, 0.5])


def test_n_step_buffer_releases_the_oldest_when_full_and_everything_at_an_episode_end():
    buffer = NStepBuffer(num_envs=2, n=2)

    def push(states, done):
        t = torch.tensor
        return buffer.push(t(states), t([0, 1]), t([1.0, 2.0], dtype=torch.float64),
                           t([0.9, 0.0 if done[1] else 0.9], dtype=torch.float64), t(done))

    first = push([0, 10], [False, False])
    assert len(first.env) == 0  # nobody has n transitions yet
    second = push([1, 11], [False, True])  # env 0 is full; env 1's episode ends (terminated)
    assert second.env.tolist() == [0, 1, 1]
    assert second.states[:, 0].tolist() == [0, 10, 11]
    assert second.valid.tolist() == [[True, True], [True, True], [True, False]]
    assert second.rewards.tolist() == [[1.0, 1.0], [2.0, 2.0], [2.0, 0.0]]
    assert second.discounts.tolist() == [[0.9, 0.9], [0.9, 0.0], [0.0, 1.0]]
    third = push([2, 12], [False, False])  # env 0 slid by one; env 1 starts again from empty
    assert third.env.tolist() == [0] and third.states.tolist() == [[1, 2]]


def test_policy_evaluation_on_the_random_walk_by_hand():
    q = policy_evaluation(tabular_model(RandomWalk(5)), 1.0, torch.full((5, 2), 0.5, dtype=torch.float64))
    v = [-2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3]  # uniform steps: V(s) = (s + 1) / 3 - 1
    assert q[:, 0].tolist() == pytest.approx([-1.0, *v[:-1]])  # left: the value of the state to the left
    assert q[:, 1].tolist() == pytest.approx([*v[1:], 1.0])


@pytest.mark.parametrize("method", ["sarsa", "expected_sarsa"])
def test_n_step_sarsa_following_the_uniform_policy_reaches_its_exact_q(method):
    model = tabular_model(RandomWalk(5))
    q_pi = policy_evaluation(model, 1.0, torch.full((5, 2), 0.5, dtype=torch.float64))
    assert float((value_iteration(model, 1.0) - q_pi).abs().max()) > 0.6  # Q* would be far off
    result = learn(RandomWalk, method, 1.0, steps=40_000, num_envs=16, epsilon=(1.0, 1.0, 1.0), alpha0=1.0,
                   omega=0.7, n_step=3, seed=0)
    assert float((result.q - q_pi).abs().max()) < 0.06


def test_n_step_q_learning_is_biased_off_policy_one_step_is_not():
    q_star = value_iteration(tabular_model(RandomWalk(5)), 0.9)
    errors = {}
    for n in (1, 3):
        result = learn(RandomWalk, "q_learning", 0.9, steps=8_000, num_envs=16, epsilon=(1.0, 1.0, 1.0),
                       alpha0=1.0, omega=0.7, n_step=n, seed=0)
        errors[n] = float((result.q - q_star).abs().max())
    # the uncorrected 3-step return sums the uniform behaviour's rewards: it learns something between Q*
    # and the uniform policy's values, while the 1-step target (deterministic here) nears Q*
    assert errors[1] < 0.1 and errors[3] > 0.5, errors


def test_n_step_soft_q_following_its_soft_policy_reaches_the_soft_optimum():
    beta = 0.5
    uniform = torch.full((5, 2), -np.log(2.0), dtype=torch.float64)
    q_star = soft_value_iteration(tabular_model(RandomWalk(5)), 0.9, beta, uniform)
    # Boltzmann at temperature beta over a uniform pi0 *is* the soft policy pi0 exp(Q / beta) / Z: on-policy,
    # so the 3-step soft return (each later reward paying beta log pi / pi0) is unbiased
    result = learn(RandomWalk, "soft_q", 0.9, steps=40_000, num_envs=16,
                   exploration=Exploration("boltzmann", beta, beta, 1.0), alpha0=1.0, omega=0.7, beta=beta,
                   n_step=3, seed=0)
    assert float((result.q - q_star).abs().max()) < 0.05


# ---------------------------------------------------------------------------------------------- double Q

def test_double_q_learning_reaches_q_star():
    q_star = value_iteration(tabular_model(lake()), 0.9)
    result = learn(lake, "double_q", 0.9, steps=20_000, num_envs=16, epsilon=(1.0, 1.0, 1.0), alpha0=1.0,
                   omega=0.0, seed=0)
    seen = visited(result)
    assert int(seen.sum()) == 11  # 16 cells less 4 holes and the goal
    assert float((result.q - q_star).abs()[seen].max()) < 1e-6


def test_double_q_learning_is_not_fooled_by_the_maximisation_bias():
    """Sutton & Barto's Figure 6.5: epsilon-greedy (0.1), alpha 0.1, ~300 episodes, averaged over runs. The
    max over B's noisy estimates makes Q-learning go left far more often than the 1% epsilon-greedy
    optimum; double Q-learning much less."""
    left = {}
    for method in ("q_learning", "double_q"):
        runs = [learn(MaximisationBias, method, 1.0, steps=400, num_envs=1, epsilon=(0.1, 0.1, 1.0), alpha0=0.1,
                      omega=0.0, seed=seed) for seed in range(6)]
        left[method] = float(np.mean([float(r.visits[0, 0] / r.visits[0].sum()) for r in runs]))
    assert left["q_learning"] > 0.12 and left["double_q"] < 0.08, left
    assert left["q_learning"] > 3 * left["double_q"], left


# ---------------------------------------------------------------------------------------------- exploration

@pytest.mark.parametrize("exploration", [Exploration("ucb", c=5.0), Exploration("boltzmann", 1.0, 0.05, 0.5)],
                         ids=["ucb", "boltzmann"])
def test_ucb_and_boltzmann_exploration_reach_q_star(exploration):
    q_star = value_iteration(tabular_model(lake()), 0.9)
    result = learn(lake, "q_learning", 0.9, steps=20_000, num_envs=16, exploration=exploration, alpha0=1.0,
                   omega=0.0, seed=0)
    seen = visited(result)
    assert int(seen.sum()) == 11
    assert float((result.q - q_star).abs()[seen].max()) < 1e-6
    assert regret(q_star, result.q, seen) == 0.0


def test_ucb_tries_every_action_of_a_state_before_any_twice():
    counts = torch.tensor([[0.0, 3.0, 0.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 5.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    probs = ucb_probs(q, counts, c=1.0)
    assert probs[0].tolist() == [0.5, 0.0, 0.5]  # the untried ones, at random
    assert probs[1].tolist() == [0.0, 1.0, 0.0]  # equal counts: the best value


def test_unknown_exploration_is_a_config_error():
    with pytest.raises(ConfigError, match="exploration.kind = 'greedy': unknown; allowed: epsilon, boltzmann, ucb"):
        learn(cliff, "q_learning", 0.9, steps=10, exploration=Exploration("greedy"))


# ---------------------------------------------------------------------------------------------- resume

def test_a_pickled_learner_continues_exactly_as_the_uninterrupted_one():
    def make() -> gym.Env:
        return gym.make("FrozenLake-v1", is_slippery=True)

    def learner() -> TabularLearner:  # the most state: two tables, 3-step buffers, UCB counts, slippery env
        return TabularLearner(make, "double_q", 0.9, steps=1_600, num_envs=4, exploration=Exploration("ucb", c=1.0),
                              alpha0=1.0, omega=0.6, n_step=3, seed=3)

    whole, interrupted = learner(), learner()
    whole.advance(1_600)
    interrupted.advance(800)
    resumed: TabularLearner = pickle.loads(pickle.dumps(interrupted))
    resumed.advance(800)
    for name in ("tables", "counts", "visits"):
        assert torch.equal(getattr(resumed, name), getattr(whole, name)), name
    assert resumed.episode_returns == whole.episode_returns and len(whole.episode_returns) > 50
    assert resumed.env_steps == whole.env_steps == 1_600


@pytest.mark.slow
def test_the_frozenlake_config_reaches_q_star(tmp_path):
    from pathlib import Path

    from langrl.api import train

    config = Path(__file__).resolve().parents[2] / "configs" / "qlearning_frozenlake.yaml"
    result = train(config, output=tmp_path / "run", overrides=["log.progress=false"])
    assert result.metrics["exact/max_abs_error"] < 0.05 and result.metrics["exact/greedy_regret"] == 0.0
    assert result.metrics["eval/success_rate"] > 0.6  # Q*'s greedy policy: 0.73
