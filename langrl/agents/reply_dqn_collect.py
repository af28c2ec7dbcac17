"""Reply-DQN rounds played in shards, in the learner's process or on Ray rollout workers (``distributed``).

The cost of a round is the frozen LM: sampling K candidates per running conversation and encoding them. With
``distributed.shards`` (or ``rollout_workers``) set, round r's episodes 0..n-1 are cut into contiguous shards
(`langrl.distributed.shards.shard_indices`); shard k plays its episodes as one batch, acting with a copy of the
Q-network at the round's start weights (its feature statistics included, not updated while it plays), and

- candidate sampling from the stream (seed, "sampling", r, k) (`shard_generator`; with one shard, the
  single-process run's stream (seed, "sampling", r)): one batched sampling call per turn is the point of a round,
  so the stream belongs to the batch, i.e. the shard;
- each episode i's reset seed (seed, "episodes", r, i) and exploration coins and random candidates from its own
  stream (seed, "reply_explore", r, i), so which shard plays an episode never changes its draws.

The learner then takes every episode's states, in shard and episode order: it folds them into the Q-network's
feature statistics (one batch for the round), then stores each episode's transitions turn by turn, training when
due (`ReplyDQN.add`, replay minibatches from (seed, "reply_replay", r)). Whether the shards ran one after another
here (`LocalReplyShards`) or at once on Ray actors (`RayReplyShards`) changes nothing: with the same ``shards``
and torch threads, the runs are identical. This is another run than the single-process one (no ``distributed``),
which learns while a round plays and acts with the weights of the moment.

A worker keeps nothing between calls but its LM, its copy of the Q-network (weights loaded once per round's
version) and its environments (reset by seed for every episode), so a replacement worker just gets the call again.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from langrl.agents.reply_dqn import ReplyDQN, ReplyLM, UpdateStats, play_episodes
from langrl.config.distributed import DistributedConfig
from langrl.distributed.pool import Worker, WorkerPool
from langrl.distributed.shards import shard_generator
from langrl.distributed.weights import load_arrays, state_arrays
from langrl.rollout.dialogue import Conversation
from langrl.run import seeds


@dataclass
class PlayedEpisode:
    """One episode a shard played: the state of each of its T turns (T, (K + 1) H) float32, the candidate chosen
    in each, and the conversation (its ``rewards``: one per turn)."""

    states: np.ndarray
    actions: list[int]
    conversation: Conversation


class FrozenEpsilonGreedy:
    """A shard's selector: epsilon-greedy with a fixed network, one random stream per episode (row); it records
    each row's states and choices and learns nothing."""

    def __init__(self, q: nn.Module, epsilon: float, k: int, rngs: Sequence[np.random.Generator]):
        self.q, self.epsilon, self.k, self.rngs = q, epsilon, k, rngs
        self.states: list[list[np.ndarray]] = [[] for _ in rngs]
        self.actions: list[list[int]] = [[] for _ in rngs]

    def choose(self, rows: list[int], states: torch.Tensor, replies: Sequence[Sequence[str]]) -> list[int]:
        device = next(self.q.parameters()).device
        with torch.no_grad():
            greedy = self.q(states.to(device)).argmax(-1).tolist()
        array = states.detach().cpu().numpy()
        out = []
        for row, state, best in zip(rows, array, greedy, strict=True):
            rng = self.rngs[row]
            action = int(rng.integers(0, self.k)) if rng.random() < self.epsilon else int(best)
            self.states[row].append(state)
            self.actions[row].append(action)
            out.append(action)
        return out

    def record(self, rows: list[int], rewards: list[float], ended: list[bool]) -> None:
        pass


class ReplyShardPlayer:
    """What plays shards: the frozen LM, a Q-network the learner's weights are loaded into, and environments."""

    def __init__(self, lm: ReplyLM, q: nn.Module, make_env: Callable[[], gym.Env], seed: int,
                 envs: Sequence[gym.Env] = ()):
        self.lm, self.q, self.make_env, self.seed = lm, q, make_env, seed
        self.envs = list(envs)

    def play(self, r: int, episodes: Sequence[int], epsilon: float, shard: int, shards: int) -> list[PlayedEpisode]:
        """Shard ``shard`` of round ``r``: the episodes numbered ``episodes`` (within the round), as one batch."""
        while len(self.envs) < len(episodes):
            self.envs.append(self.make_env())
        reset = [seeds.derive_seed(self.seed, "episodes", r, i) for i in episodes]
        rngs = [np.random.default_rng(seeds.derive_seed(self.seed, "reply_explore", r, i)) for i in episodes]
        generator = shard_generator(self.seed, r, shard, shards, device=self.lm.model.device)
        selector = FrozenEpsilonGreedy(self.q, epsilon, self.lm.k, rngs)
        self.q.eval()
        conversations = play_episodes(self.lm, self.envs[:len(episodes)], reset, selector, generator)
        return [PlayedEpisode(np.stack(selector.states[j]), selector.actions[j], c)
                for j, c in enumerate(conversations)]


def learn_from(learner: ReplyDQN, episodes: Sequence[PlayedEpisode], rng: np.random.Generator,
               stats: UpdateStats) -> None:
    """Fold the episodes' states into the feature statistics, then store their transitions in order (an episode's
    last one terminal), training when due."""
    learner.q.observe(torch.from_numpy(np.concatenate([e.states for e in episodes])).to(learner.device))
    for e in episodes:
        turns = len(e.actions)
        for t in range(turns):
            following = e.states[t + 1] if t + 1 < turns else None
            learner.add(e.states[t], e.actions[t], e.conversation.rewards[t], following, rng, stats)


class ReplyCollector(Protocol):
    def collect(self, q: nn.Module, version: int, r: int, parts: list[list[int]],
                epsilon: float) -> list[list[PlayedEpisode]]:
        """Play round ``r``'s shards (``parts``: each shard's episode numbers; empty ones are skipped) with the
        weights of ``q`` (``version`` names them); each non-empty shard's episodes, in shard order."""
        ...

    def close(self) -> None:
        ...


class LocalReplyShards:
    """The shards one after another in the learner's process, with a copy of the learner's network."""

    def __init__(self, player: ReplyShardPlayer):
        self.player = player

    def collect(self, q: nn.Module, version: int, r: int, parts: list[list[int]],
                epsilon: float) -> list[list[PlayedEpisode]]:
        self.player.q.load_state_dict(q.state_dict())
        return [self.player.play(r, part, epsilon, k, len(parts)) for k, part in enumerate(parts) if part]

    def close(self) -> None:
        pass


class ReplyShardActor(Worker):
    """One rollout worker of a reply_dqn run; ``run`` is the `ReplyShardPlayer` its builder made."""

    run: ReplyShardPlayer

    def load(self, state: dict[str, Any]) -> None:
        load_arrays({"q": self.run.q}, state)

    def play(self, r: int, episodes: list[int], epsilon: float, shard: int, shards: int) -> list[PlayedEpisode]:
        return self.run.play(r, episodes, epsilon, shard, shards)


class RayReplyShards:
    """The shards on ``dist.rollout_workers`` Ray actors: shard k on worker k mod N, results in shard order."""

    def __init__(self, config: Any, dist: DistributedConfig, builder: str):
        """``builder``: the ``"module:function"`` that makes a `ReplyShardPlayer` from the run's config."""
        self.pool = WorkerPool(ReplyShardActor, config, dist, builder)

    def collect(self, q: nn.Module, version: int, r: int, parts: list[list[int]],
                epsilon: float) -> list[list[PlayedEpisode]]:
        # parameters and buffers: the running feature statistics are buffers
        self.pool.publish(lambda: state_arrays(q, "q"), version)
        jobs = [(k, k % len(self.pool)) for k, part in enumerate(parts) if part]
        refs = [self.pool.actors[w].play.remote(r, parts[k], epsilon, k, len(parts)) for k, w in jobs]
        out = []
        for (k, worker), ref in zip(jobs, refs, strict=True):
            def redo(actor: Any, k: int = k) -> Any:
                return actor.play.remote(r, parts[k], epsilon, k, len(parts))

            played = self.pool.get(worker, ref, f"rollout worker {worker} (round {r}, shard {k})", redo)
            out.append(copy.deepcopy(played))  # Ray hands the arrays over read-only, from shared memory
        return out

    def close(self) -> None:
        self.pool.close()
