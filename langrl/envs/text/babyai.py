"""BabyAI with text observations and string actions (GLAM, Carta et al. 2023).

The wrapped environment is any minigrid ``BabyAI-*`` level. Observations are the words of
:func:`describe_view`; the six actions are named in :data:`BABYAI_ACTIONS` and listed in every ``info``
(``info["actions"]``), which an LM policy or prior scores as strings. Minigrid's seventh action, ``done``,
is dropped as in GLAM: no BabyAI level rewards it.

This is a ``gymnasium.Env`` that owns the minigrid environment rather than a ``Wrapper`` of it, so that
``env.unwrapped`` is the text environment and ``check_env`` checks the text spaces.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* ids with gymnasium)
import numpy as np

from langrl.envs.text.describe import describe_view
from langrl.envs.text.spaces import MAX_CHARS, text_space

BABYAI_ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")


class BabyAIText(gym.Env[str, np.int64]):
    """``BabyAI-<level>-v0`` with a text observation; ``info`` has ``actions``, ``mission`` and ``image``.

    ``env_kwargs`` go to minigrid's constructor (e.g. ``room_size``, ``num_dists``).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, env_id: str = "BabyAI-GoToLocal-v0", render_mode: str | None = None,
                 max_length: int = MAX_CHARS, **env_kwargs: Any):
        self.inner = gym.make(env_id, disable_env_checker=True, **env_kwargs)
        self.env_id = env_id
        self.render_mode = render_mode
        self.observation_space = text_space(max_length)
        self.action_space = gym.spaces.Discrete(len(BABYAI_ACTIONS))
        self.text = ""

    def observe(self, obs: dict[str, Any], info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The text of a minigrid observation, and ``info`` with the action strings added."""
        self.text = describe_view(obs["image"], obs["mission"])
        info = {**info, "actions": list(BABYAI_ACTIONS), "mission": obs["mission"], "image": obs["image"]}
        return self.text, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        obs, info = self.inner.reset(seed=seed, options=options)
        return self.observe(obs, info)

    def step(self, action: int | np.integer) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.inner.step(int(action))
        text, info = self.observe(obs, info)
        return text, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        """``ansi``: the current description (the words are the rendering of a text environment)."""
        return self.text if self.render_mode == "ansi" else None

    def close(self) -> None:
        self.inner.close()
