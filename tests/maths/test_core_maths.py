"""Tier 1: the shared maths of the core against hand-computed values: TD targets, the PPO loss, the soft
(KL-regularised) backup and its posterior policy, and the seed streams."""

from __future__ import annotations

import math

import pytest
import torch

from langrl.rl.policy import seq_mean
from langrl.rl.ppo import ppo_loss
from langrl.rl.td import (
    double_q_target,
    expected_sarsa_target,
    q_learning_target,
    sarsa_target,
    soft_policy,
    soft_q_target,
    soft_value,
    td_error,
)
from langrl.run import seeds


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


R = torch.tensor([1.0, 0.5])
DISC = torch.tensor([0.9, 0.0])  # the second transition ends its episode
NEXT_Q = torch.tensor([[1.0, 3.0, 2.0], [5.0, 4.0, 6.0]])


def test_q_learning_sarsa_and_expected_sarsa_targets():
    close(q_learning_target(R, DISC, NEXT_Q), [1 + 0.9 * 3.0, 0.5])
    close(sarsa_target(R, DISC, NEXT_Q, torch.tensor([2, 0])), [1 + 0.9 * 2.0, 0.5])
    probs = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    close(expected_sarsa_target(R, DISC, NEXT_Q, probs), [1 + 0.9 * (0.5 + 0.75 + 0.5), 0.5])


def test_double_q_evaluates_the_online_argmax_with_the_target_network():
    target_q = torch.tensor([[10.0, 20.0, 30.0], [0.0, 0.0, 0.0]])
    close(double_q_target(R, DISC, NEXT_Q, target_q), [1 + 0.9 * 20.0, 0.5])


def test_soft_backup_and_its_policy_are_the_posterior():
    ref = torch.tensor([[0.5, 0.25, 0.25]]).log()
    q = torch.tensor([[0.0, 1.0, 2.0]])
    beta = 0.5
    z = 0.5 * math.exp(0.0) + 0.25 * math.exp(2.0) + 0.25 * math.exp(4.0)
    close(soft_value(q, ref, beta), [beta * math.log(z)], atol=1e-5)
    close(soft_q_target(torch.tensor([1.0]), torch.tensor([0.9]), q, ref, beta), [1 + 0.9 * beta * math.log(z)],
          atol=1e-5)
    close(soft_policy(q, ref, beta).exp(), [[0.5 / z, 0.25 * math.exp(2) / z, 0.25 * math.exp(4) / z]], atol=1e-6)
    # beta -> 0: the soft value is the hard max
    close(soft_value(q, ref, 1e-3), [2.0], atol=5e-3)


def test_td_error_is_target_minus_the_taken_actions_value():
    close(td_error(NEXT_Q, torch.tensor([1, 2]), torch.tensor([4.0, 6.5])), [1.0, 0.5])


def test_ppo_loss_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    old = torch.log(torch.tensor([[0.25, 0.25]]))  # ratios 2 and 1
    adv = torch.tensor([[1.0, -1.0]])
    values, old_values, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    mask = torch.ones(1, 2)
    loss, parts = ppo_loss(logp, old, adv, values, old_values, returns, mask, clip_eps=0.2, value_clip=0.5,
                           value_coef=0.5, entropy=torch.tensor([[1.0, 3.0]]), entropy_coef=0.1)
    # policy: token 0 -min(2 * 1, 1.2 * 1) = -1.2; token 1 -min(1 * -1, 1 * -1) = 1; mean -0.1
    # value: token 0 max((1 - 2)^2, (0.5 - 2)^2) = 2.25; token 1 (0 - 1)^2 = 1; 0.5 * mean = 0.8125
    # entropy mean 2 -> loss = -0.1 + 0.5 * 0.8125 - 0.1 * 2
    assert parts["loss/policy"] == pytest.approx(-0.1) and parts["loss/value"] == pytest.approx(0.8125)
    assert float(loss) == pytest.approx(-0.1 + 0.40625 - 0.2)
    assert parts["clip/fraction"] == pytest.approx(0.5) and parts["entropy"] == pytest.approx(2.0)
    assert parts["kl/old"] == pytest.approx(-math.log(2) / 2)
    loss_seq, _ = ppo_loss(logp, old, adv, values, old_values, returns, mask, 0.2, None, 0.0, aggregate=seq_mean)
    assert float(loss_seq) == pytest.approx(-0.1)


def test_seed_streams_are_distinct_reproducible_and_keyed():
    a = seeds.derive_seed(0, "sampling", 1)
    assert a == seeds.derive_seed(0, "sampling", 1)
    others = {seeds.derive_seed(0, "sampling", 2), seeds.derive_seed(1, "sampling", 1),
              seeds.derive_seed(0, "minibatch", 1), seeds.derive_seed(-1, "sampling", 1)}
    assert a not in others and len(others) == 4 and all(0 <= s < 2**63 for s in others)
    g1, g2 = seeds.generator(3, "envs"), seeds.generator(3, "envs")
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    with pytest.raises(ValueError, match="unknown random stream 'sampel'"):
        seeds.derive_seed(0, "sampel")
