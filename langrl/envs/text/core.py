"""Text environments: the common ground of both directions of langrl.

A text environment is a Gymnasium environment whose observations are text and whose actions are text:

- *choice*: the action is one of the admissible strings listed in ``info["actions"]`` (the action space
  is ``Discrete(A)``, the index of the string): BabyAI text, CartPole text. A policy scores the strings.
- *generative*: the action is free text (a ``Text`` action space) that the LM writes.

A prompt + reward task is the one-step generative case (:class:`PromptEnv`): ``reset`` draws a prompt,
``step(completion)`` scores it and ends the episode. The LM trainer samples and scores many prompts at
once through the same task (:class:`PromptTask`), since batched sampling is what makes it fast.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from langrl.envs.prompts import PromptSet
from langrl.envs.text.spaces import text_space
from langrl.errors import ConfigError
from langrl.rewards import RewardFn, score


def make_env(env_id: str, kwargs: dict[str, Any] | None = None,
             max_episode_steps: int | None = None) -> gym.Env:
    """``gymnasium.make`` with the environment's own kwargs and an optional step limit."""
    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps, **(kwargs or {}))
    except gym.error.Error as e:
        raise ConfigError(f"env.id = {env_id!r}: {e}; use a registered id such as "
                          f"langrl/CartPole-Text-v0 or langrl/BabyAI-GoToLocal-Text-v0") from None


def quiet_reset(env: gym.Env, seed: int) -> tuple[Any, dict[str, Any]]:
    """``env.reset(seed=seed)`` without minigrid's prints of rejected level layouts (they would mix with the
    JSON ``langrl eval`` prints)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return env.reset(seed=seed)


def action_names(env: gym.Env, seed: int = 0) -> list[str]:
    """The admissible action strings of a choice text environment (``info["actions"]`` after a reset)."""
    _, info = env.reset(seed=seed)
    if "actions" not in info:
        raise ConfigError(f"env.id = {env.spec.id if env.spec else env!r}: reset's info has no 'actions' "
                          f"(the action strings an LM policy scores); use a langrl text environment")
    return list(info["actions"])


@dataclass
class PromptTask:
    """A prompt + reward task: the prompts (texts, token ids, seeded order) and the reward."""

    prompts: PromptSet
    reward: RewardFn

    def for_step(self, step: int) -> list[int]:
        """Indices of the prompts of training step ``step`` (0-based)."""
        return self.prompts.for_step(step)

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """The batched reward, checked (`langrl.rewards.score`)."""
        return score(self.reward, prompts, completions)

    def env(self) -> PromptEnv:
        """This task as a one-step Gymnasium text environment."""
        return PromptEnv(self)


class PromptEnv(gym.Env[str, str]):
    """One prompt per episode: ``reset`` draws a prompt (``options={"index": i}`` picks one), the action
    is the completion, ``step`` returns its reward and ends the episode (``terminated``)."""

    metadata = {"render_modes": []}

    def __init__(self, task: PromptTask):
        self.task = task
        self.observation_space = text_space()
        self.action_space = text_space()
        self.prompt: str | None = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        texts = self.task.prompts.texts
        index = int(options["index"]) if options and "index" in options else int(self.np_random.integers(
            len(texts)))
        self.prompt = texts[index]
        return self.prompt, {"index": index}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.prompt is None:
            raise RuntimeError("PromptEnv.step before reset")
        reward = self.task.score([self.prompt], [str(action)])[0]
        prompt, self.prompt = self.prompt, None
        return prompt, float(reward), True, False, {}
