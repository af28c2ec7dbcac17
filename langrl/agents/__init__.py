"""LMs inside ordinary RL agents: observation encoder, reward (judge) and exploration prior.

- `LMEncoder`: an SB3 features extractor over token ids (frozen + cached, full fine-tuning, or LoRA).
- `LMJudge`: P(yes) of an LM judge; a `RewardFn` for LM training, and `LMJudgeReward` for environments.
- `LMActionPrior`: the LM's distribution over action strings; `PriorDQN` and `PriorActorCriticPolicy`
  explore with it in SB3.
- `exploration`: epsilon-greedy (and its schedules), Boltzmann, UCB, as pure functions.

Names are imported on first use: stable-baselines3 is only needed for the SB3 classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langrl.agents.cache import LRUCache
    from langrl.agents.encoder import LMEncoder, pool_hidden
    from langrl.agents.judge import LMJudge
    from langrl.agents.judge_reward import LMJudgeReward
    from langrl.agents.prior import LMActionPrior, action_logprobs
    from langrl.agents.protocols import ActionPrior, ObservationDecoder
    from langrl.agents.sb3 import PriorActorCriticPolicy, PriorDQN

LAZY = {
    "LRUCache": "cache", "LMEncoder": "encoder", "pool_hidden": "encoder", "LMJudge": "judge",
    "LMJudgeReward": "judge_reward", "LMActionPrior": "prior", "action_logprobs": "prior",
    "ActionPrior": "protocols", "ObservationDecoder": "protocols", "PriorActorCriticPolicy": "sb3",
    "PriorDQN": "sb3",
}

__all__ = [
    "ActionPrior", "LMActionPrior", "LMEncoder", "LMJudge", "LMJudgeReward", "LRUCache", "ObservationDecoder",
    "PriorActorCriticPolicy", "PriorDQN", "action_logprobs", "pool_hidden",
]


def __getattr__(name: str) -> Any:
    if name in LAZY:
        return getattr(importlib.import_module(f"langrl.agents.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
