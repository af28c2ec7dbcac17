"""LMs inside ordinary RL agents: observation encoder, reward (judge) and exploration prior.

- `LMEncoder`: an SB3 features extractor over token ids (frozen + cached, full fine-tuning, or LoRA).
- `LMJudge`: P(yes) of an LM judge; a `RewardFn` for LM training, and `LMJudgeReward` for environments.
- `LMActionPrior`: the LM's distribution over action strings; `PriorDQN` and `PriorActorCriticPolicy`
  explore with it in SB3. `LMActorCriticPolicy` and `LMDQNPolicy`: SB3 policies on `LMEncoder`, named by
  dotted path from an RL Zoo YAML (all of them save the LM as its name, not its weights).
- `exploration`: epsilon-greedy (and its schedules), Boltzmann, UCB, as pure functions.
- `LMPolicy`: the LM as the policy (GLAM): it scores the action strings (`score_actions`, one batched
  pass for all environments); `train_agent` trains it with behaviour cloning then PPO over environment
  steps, `evaluate_agent` measures its success rate on held-out seeds.

Names are imported on first use: stable-baselines3 is only needed for the SB3 classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from langrl.protocols import ActionPrior, ObservationDecoder
from langrl.rollout.episodes import Episode, run_episodes

if TYPE_CHECKING:
    from langrl.agents.cache import LRUCache
    from langrl.agents.encoder import LMEncoder, pool_hidden
    from langrl.agents.episodes import bot_episodes
    from langrl.agents.imitation import behaviour_cloning, lm_demonstrations
    from langrl.agents.judge import LMJudge
    from langrl.agents.judge_reward import LMJudgeReward
    from langrl.agents.lm_agent import evaluate_agent, train_agent
    from langrl.agents.lm_policy import LMPolicy
    from langrl.agents.prior import LMActionPrior, action_logprobs
    from langrl.agents.sb3 import LMActorCriticPolicy, LMDQNPolicy, PriorActorCriticPolicy, PriorDQN
    from langrl.agents.scoring import score_actions

LAZY = {
    "LRUCache": "cache", "LMEncoder": "encoder", "pool_hidden": "encoder", "LMJudge": "judge",
    "LMJudgeReward": "judge_reward", "LMActionPrior": "prior", "action_logprobs": "prior",
    "PriorActorCriticPolicy": "sb3", "PriorDQN": "sb3", "LMActorCriticPolicy": "sb3", "LMDQNPolicy": "sb3",
    "bot_episodes": "episodes",
    "behaviour_cloning": "imitation", "lm_demonstrations": "imitation", "LMPolicy": "lm_policy",
    "evaluate_agent": "lm_agent", "train_agent": "lm_agent", "score_actions": "scoring",
}

__all__ = [
    "ActionPrior", "Episode", "LMActionPrior", "LMActorCriticPolicy", "LMDQNPolicy", "LMEncoder", "LMJudge",
    "LMJudgeReward", "LMPolicy",
    "LRUCache",
    "ObservationDecoder", "PriorActorCriticPolicy", "PriorDQN", "action_logprobs", "behaviour_cloning",
    "bot_episodes", "evaluate_agent", "lm_demonstrations", "pool_hidden", "run_episodes", "score_actions",
    "train_agent",
]


def __getattr__(name: str) -> Any:
    if name in LAZY:
        return getattr(importlib.import_module(f"langrl.agents.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
