"""CartPole-v1 whose observation is a sentence: the simplest text environment an LM encoder can learn.

The four numbers are rounded (``decimals``), so the text carries less than the float state: at 2 decimals
CartPole is still solvable, and the rounding keeps the number of distinct observations (and so the
encoder's cache) finite in practice.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from langrl.envs.text.spaces import text_space

CARTPOLE_ACTIONS = ("push left", "push right")


def number(x: float, decimals: int) -> str:
    """``x`` rounded to ``decimals``, with ``-0.00`` written as ``0.00``."""
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def describe_cartpole(state: np.ndarray, decimals: int = 2) -> str:
    """One sentence for the state (4,) = (position, velocity, angle in radians, angular velocity)."""
    pos, vel, angle, ang_vel = (number(float(v), decimals) for v in state)
    return (f"The cart is at position {pos} moving at {vel}; "
            f"the pole is at angle {angle} turning at {ang_vel}.")


class CartPoleText(gym.Env[str, np.int64]):
    """``CartPole-v1`` (500-step limit included) with a text observation; ``info`` has ``actions`` and
    the float ``state``."""

    metadata = {"render_modes": ["ansi"], "render_fps": 50}

    def __init__(self, decimals: int = 2, render_mode: str | None = None):
        self.inner = gym.make("CartPole-v1", disable_env_checker=True)
        self.decimals = decimals
        self.render_mode = render_mode
        self.observation_space = text_space(256)
        self.action_space = gym.spaces.Discrete(len(CARTPOLE_ACTIONS))
        self.text = ""

    def observe(self, state: np.ndarray, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.text = describe_cartpole(state, self.decimals)
        return self.text, {**info, "actions": list(CARTPOLE_ACTIONS), "state": state}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        state, info = self.inner.reset(seed=seed, options=options)
        return self.observe(state, info)

    def step(self, action: int | np.integer) -> tuple[str, float, bool, bool, dict[str, Any]]:
        state, reward, terminated, truncated, info = self.inner.step(int(action))
        text, info = self.observe(state, info)
        return text, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        """``ansi``: the current sentence."""
        return self.text if self.render_mode == "ansi" else None

    def close(self) -> None:
        self.inner.close()
