"""The algorithms: REINFORCE / RLOO / GRPO, A2C / PPO, and DPG, each built from the config."""

from __future__ import annotations

from transformers import PreTrainedModel

from langrl.algorithms.actor_critic import ActorCritic
from langrl.algorithms.base import Algorithm
from langrl.algorithms.batch import Batch
from langrl.algorithms.dpg import DPG
from langrl.algorithms.policy_gradient import PolicyGradient
from langrl.config import Config


def build_algorithm(config: Config, policy: PreTrainedModel, critic: PreTrainedModel | None) -> Algorithm:
    """The algorithm named by ``config.algorithm``; ``critic`` is the separate critic model, if any."""
    name = config.algorithm
    if name in ("a2c", "ppo"):
        return ActorCritic(name, config, policy, critic)
    if name == "dpg":
        return DPG(name, config, policy)
    return PolicyGradient(name, config)


__all__ = ["DPG", "ActorCritic", "Algorithm", "Batch", "PolicyGradient", "build_algorithm"]
