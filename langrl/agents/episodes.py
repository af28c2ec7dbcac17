"""Demonstrations of minigrid's BabyAI bot on langrl's BabyAI text environments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import gymnasium as gym

from langrl.rollout.episodes import Episode


def bot_episodes(make: Callable[[], gym.Env], seeds: Sequence[int]) -> list[Episode]:
    """Episodes of minigrid's `BabyAIBot` expert on a langrl BabyAI text environment; failures dropped.

    The bot plans on the underlying minigrid environment (``env.unwrapped.inner``); an episode in which it
    asks for minigrid's ``done`` action, which the text environment leaves out, is dropped too.
    """
    from minigrid.utils.baby_ai_bot import BabyAIBot

    env = make()
    n_actions = int(cast(gym.spaces.Discrete, env.action_space).n)
    episodes = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        bot = BabyAIBot(env.unwrapped.inner.unwrapped)  # type: ignore[attr-defined]
        episode = Episode(seed=seed)
        while True:
            action = int(bot.replan())
            if action >= n_actions:
                break
            nxt, reward, terminated, truncated, _ = env.step(action)
            episode.observations.append(obs)
            episode.actions.append(action)
            episode.rewards.append(float(reward))
            obs = nxt
            if terminated or truncated:
                episode.success = bool(terminated and cast(float, reward) > 0)
                break
        if episode.success:
            episodes.append(episode)
    env.close()
    return episodes
