"""Tier 3: tabular TD learners against the exact oracle computed from the environment's own model.

On visited states (the others keep their initial 0): Q-learning from uniform behaviour reaches Q*, soft
Q-learning the soft optimum of value iteration, and on CliffWalking SARSA's online returns beat
Q-learning's under the same epsilon-greedy behaviour (the safe path vs the optimal one next to the cliff,
Sutton & Barto 2018, Example 6.6)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from langrl.agents.tabular import greedy_policy, learn, soft_value_iteration, tabular_model, value_iteration
from langrl.errors import ConfigError
from langrl.rl.td import soft_policy


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
