"""Tier 2: DQN on CartPole: it trains (parameters move, losses finite) with hard and Polyak targets and
double DQN; the learner advanced in chunks, or pickled and restored mid-run, does what one uninterrupted
advance does; evaluation keeps the best network; and the classic trap, learning_starts >= total steps, is a
clear error."""

from __future__ import annotations

import copy
import math
import pickle

import gymnasium as gym
import pytest
import torch

from langrl.agents.dqn import (
    MLP,
    BestNetwork,
    DQNLearner,
    DQNSettings,
    ReplayBuffer,
    evaluate_dqn,
    next_stop,
    train_dqn,
    update_target,
)
from langrl.errors import ConfigError


def cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


@pytest.mark.parametrize(("double_q", "tau", "num_envs"), [(False, 1.0, 1), (True, 0.5, 2)])
def test_dqn_trains_with_finite_losses(double_q, tau, num_envs):
    settings = DQNSettings(total_steps=1_000, num_envs=num_envs, learning_starts=300, train_freq=64,
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
    assert float(target.weight.detach()) == pytest.approx(0.25 * 1.0 + 0.75 * 3.0)


def test_learning_starts_past_the_budget_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"learning_starts = 1000 >= total_steps = 1000: DQN would never train"):
        train_dqn(cartpole, DQNSettings(total_steps=1_000, learning_starts=1_000))


def small(**changes) -> DQNSettings:
    return DQNSettings(**{"total_steps": 800, "learning_starts": 200, "train_freq": 50, "gradient_steps": 4,
                          "hidden": (16,), "seed": 1, **changes})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("num_envs", [1, 2])
def test_chunks_and_a_pickled_restore_continue_as_the_uninterrupted_learner(num_envs):
    whole = DQNLearner(cartpole, small(num_envs=num_envs))
    reference = whole.advance(800)
    parts = DQNLearner(cartpole, small(num_envs=num_envs))
    first = parts.advance(300)
    # what a checkpoint keeps: weights, optimizer and the pickled state; restored into a fresh learner
    saved = (copy.deepcopy(parts.q.state_dict()), copy.deepcopy(parts.target.state_dict()),
             copy.deepcopy(parts.optimizer.state_dict()), pickle.dumps(parts.state))
    resumed = DQNLearner(cartpole, small(num_envs=num_envs))
    resumed.q.load_state_dict(saved[0])
    resumed.target.load_state_dict(saved[1])
    resumed.optimizer.load_state_dict(saved[2])
    resumed.close()
    resumed.state = pickle.loads(saved[3])
    rest = [resumed.advance(200), resumed.advance(300)]
    assert resumed.step == whole.step == 800
    assert first.losses + rest[0].losses + rest[1].losses == reference.losses
    assert first.episode_returns + rest[0].episode_returns + rest[1].episode_returns == reference.episode_returns
    assert same_weights(resumed.q, whole.q) and same_weights(resumed.target, whole.target)


def test_replay_buffer_pickles_its_filled_part_and_restores_its_size():
    buffer = ReplayBuffer(1_000, (4,))
    obs = torch.randn(3, 4).numpy()
    buffer.add(obs, torch.tensor([0, 1, 0]).numpy(), torch.ones(3).numpy(), obs, torch.zeros(3).numpy())
    assert len(pickle.dumps(buffer)) < 2_000  # not 1,000 rows of zeros
    again = pickle.loads(pickle.dumps(buffer))
    assert again.obs.shape == (1_000, 4) and len(again) == 3 and (again.obs[:3] == obs).all()


def test_target_update_copies_running_statistics():
    class Normed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(1, 1)
            self.register_buffer("running_mean", torch.zeros(1))

    q, target = Normed(), Normed()
    q.running_mean.fill_(3.0)
    update_target(q, target, 0.5)  # parameters are averaged, statistics copied
    assert float(target.running_mean) == 3.0


def test_best_network_keeps_the_earliest_of_equal_scores():
    q, best = torch.nn.Linear(1, 1), BestNetwork(torch.nn.Linear(1, 1))
    assert best.offer(q, 10.0, 100)
    with torch.no_grad():
        q.weight.fill_(7.0)
    assert not best.offer(q, 10.0, 200) and best.step == 100 and float(best.network.weight) != 7.0
    assert best.offer(q, 11.0, 300) and float(best.network.weight) == 7.0
    assert next_stop(250, 1_000, 100, 0, 300) == 300 and next_stop(950, 1_000, 100) == 1_000


def test_train_dqn_evaluates_on_schedule_and_keeps_the_best():
    result = train_dqn(cartpole, small(eval_every=300, eval_episodes=2))
    assert [e.env_steps for e in result.evaluations] == [300, 600, 800]
    assert result.best is not None
    top = max(result.evaluations, key=lambda e: e.mean_return)
    assert result.best.step == next(e.env_steps for e in result.evaluations if e.mean_return == top.mean_return)
    again = evaluate_dqn(result.best.network, cartpole, 2)
    assert sum(again) / 2 == pytest.approx(result.best.mean_return)  # same seeds, same greedy episodes
