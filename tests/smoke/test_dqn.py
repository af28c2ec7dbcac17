"""Tier 2: DQN on CartPole: it trains (parameters move, losses finite) with hard and Polyak targets and
double DQN, and the classic trap, learning_starts >= total steps, is a clear error."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

from langrl.agents.dqn import MLP, DQNSettings, evaluate_dqn, train_dqn, update_target
from langrl.errors import ConfigError


def cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


@pytest.mark.parametrize(("double_q", "tau", "num_envs"), [(False, 1.0, 1), (True, 0.5, 2)])
def test_dqn_trains_with_finite_losses(double_q, tau, num_envs):
    settings = DQNSettings(total_steps=2_000, num_envs=num_envs, learning_starts=500, train_freq=64,
                           gradient_steps=8, double_q=double_q, tau=tau, hidden=(32,), seed=0)
    torch.manual_seed(settings.seed)
    initial = [p.clone() for p in MLP(4, 2, settings.hidden).parameters()]
    result = train_dqn(cartpole, settings)
    assert result.losses and all(math.isfinite(x) for x in result.losses)
    assert any(not torch.equal(a, b) for a, b in zip(initial, result.q_network.parameters(), strict=True))
    assert result.episode_returns and len(evaluate_dqn(result.q_network, cartpole, 2)) == 2


def test_polyak_update_by_hand():
    q, target = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        q.weight.fill_(1.0)
        target.weight.fill_(3.0)
    update_target(q, target, 0.25)
    assert float(target.weight) == pytest.approx(0.25 * 1.0 + 0.75 * 3.0)


def test_learning_starts_past_the_budget_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"learning_starts = 1000 >= total_steps = 1000: DQN would never train"):
        train_dqn(cartpole, DQNSettings(total_steps=1_000, learning_starts=1_000))
