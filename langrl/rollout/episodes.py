"""Whole episodes on seeded environments, one batched policy call per step: evaluation on held-out
seeds, LM-proposed demonstrations.

An episode is a success when it terminates (not truncates) with a positive reward: BabyAI rewards
``1 - 0.9 * steps / max_steps`` on success and 0 otherwise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import gymnasium as gym

from langrl.envs.text.history import render_history

# Views (B,) -> chosen action indices (B,): one batched call per step of the running episodes.
Chooser = Callable[[list[str]], list[int]]


@dataclass
class Episode:
    """One episode from ``seed``: the observation text each action was taken in, the actions, rewards."""

    seed: int
    observations: list[str] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    success: bool = False

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))


def run_episodes(choose: Chooser, make: Callable[[], gym.Env], seeds: Sequence[int], actions: Sequence[str],
                 window: int = 0, parallel: int = 8) -> list[Episode]:
    """Play one episode per seed, ``parallel`` environments at a time, one ``choose`` call per step.

    ``choose`` sees each running environment's view (:func:`render_history` over the last ``window``
    steps), so a policy acts exactly as it would while training. Episodes come back in seed order.
    """
    queue = list(seeds)
    envs = [make() for _ in range(min(parallel, len(queue)))]
    running: list[tuple[Episode, str, deque[tuple[str, str]]] | None] = [None] * len(envs)
    done: list[Episode] = []

    def start(slot: int) -> None:
        if not queue:
            running[slot] = None
            return
        seed = queue.pop(0)
        obs, _ = envs[slot].reset(seed=seed)
        running[slot] = (Episode(seed=seed), obs, deque(maxlen=window))

    for slot in range(len(envs)):
        start(slot)
    while any(r is not None for r in running):
        active = [i for i, r in enumerate(running) if r is not None]
        views = [render_history(list(running[i][2]), running[i][1]) for i in active]  # type: ignore[index]
        for i, action in zip(active, choose(views), strict=True):
            episode, obs, past = running[i]  # type: ignore[misc]
            nxt, reward, terminated, truncated, _ = envs[i].step(action)
            episode.observations.append(obs)
            episode.actions.append(int(action))
            episode.rewards.append(float(reward))
            if past.maxlen:
                past.append((obs, actions[action]))
            if terminated or truncated:
                episode.success = bool(terminated and cast(float, reward) > 0)
                done.append(episode)
                start(i)
            else:
                running[i] = (episode, nxt, past)
    for env in envs:
        env.close()
    order = {s: k for k, s in enumerate(seeds)}
    return sorted(done, key=lambda e: order[e.seed])


def summarise_episodes(episodes: Sequence[Episode]) -> dict[str, float]:
    """``success_rate``, ``mean_return`` and ``mean_length`` over the episodes, and their number."""
    n = max(1, len(episodes))
    return {
        "episodes": len(episodes),
        "success_rate": sum(e.success for e in episodes) / n,
        "mean_return": sum(e.ret for e in episodes) / n,
        "mean_length": sum(len(e.actions) for e in episodes) / n,
    }
