"""The algorithms: REINFORCE / RLOO / GRPO, A2C / PPO, and DPG, each built from the config."""

from __future__ import annotations

from transformers import PreTrainedModel

from langrl.config import Config
from langrl.lm.actor_critic import ActorCritic
from langrl.lm.base import Algorithm
from langrl.lm.batch import Batch
from langrl.lm.dpg import DPG
from langrl.lm.policy_gradient import PolicyGradient


def build_algorithm(config: Config, policy: PreTrainedModel, critic: PreTrainedModel | None) -> Algorithm:
    """The algorithm named by ``config.algorithm``; ``critic`` is the separate critic model, if any."""
    name = config.algorithm
    if name in ("a2c", "ppo"):
        return ActorCritic(name, config, policy, critic)
    if name == "dpg":
        return DPG(name, config, policy)
    return PolicyGradient(name, config)


__all__ = ["DPG", "ActorCritic", "Algorithm", "Batch", "PolicyGradient", "build_algorithm"]
