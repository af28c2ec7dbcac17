"""The prefix baseline: rewards to go, per-position group baselines, and the prefix texts they score."""

from __future__ import annotations

import pytest
import torch

from langrl.rl.advantages import grpo_advantages, rewards_to_go, rloo_advantages


def test_rewards_to_go_subtract_what_the_prefix_earned() -> None:
    rewards = torch.tensor([1.0, 0.5])
    prefix = torch.tensor([[0.0, 0.25, 1.0], [0.0, 0.5, 0.5]])
    assert torch.equal(rewards_to_go(rewards, prefix), torch.tensor([[1.0, 0.75, 0.0], [0.5, 0.0, 0.0]]))


@pytest.mark.parametrize("algorithm", ["rloo", "grpo", "reinforce"])
def test_token_advantages_start_at_the_sequence_advantage(algorithm: str, lm_config) -> None:
    """Token 0 (nothing earned yet) gets the sequence advantage; token t the group baseline of position t."""
    from langrl.config import load_config
    from langrl.lm.policy_gradient import PolicyGradient

    config = load_config(lm_config(algorithm=algorithm, sampling__group_size=2))
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])
    prefix = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    per_token = PolicyGradient(algorithm, config).advantages(rewards, 2, prefix)
    sequence = PolicyGradient(algorithm, config).advantages(rewards, 2)
    assert torch.allclose(per_token[:, 0], sequence)
    to_go_1 = torch.tensor([[0.0, 0.0], [0.0, 0.5]])  # position 1: prompt 0's pair, prompt 1's pair
    expected = {"rloo": rloo_advantages(to_go_1), "grpo": grpo_advantages(to_go_1),
                "reinforce": sequence.view(2, 2) - prefix[:, 1].view(2, 2)}[algorithm]
    assert torch.allclose(per_token[:, 1], expected.reshape(-1))
