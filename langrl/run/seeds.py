"""Every random stream of a run, derived from (seed, stream, keys) in one place.

A stream's seed is a hash of the run's seed, the stream's name and its keys (a step, an update, an
episode index) through NumPy's ``SeedSequence``, so streams never overlap by accident (as ``seed + 7``
and ``seed + 4242`` style offsets can) and a resumed run, or another process, derives the same seeds.
"""

from __future__ import annotations

import numpy as np
import torch

# Appending keeps earlier streams' seeds; reordering would change every seeded result.
STREAMS = (
    "sampling",        # token sampling of training step s
    "prompt_order",    # the permutation of the prompts in epoch e
    "minibatch",       # minibatch shuffling of update s
    "eval_samples",    # the before/after samples of an LM run
    "evaluate",        # `langrl eval` sampling
    "envs",            # the vector environments' first reset
    "agent_step",      # action sampling and minibatch shuffling of agent update u
    "agent_eval",      # action sampling on held-out seeds
    "demos",           # an LM proposer's demonstrations
    "cloning",         # behaviour-cloning minibatches
    "episodes",        # the start states (reset seeds) of a dialogue run's step s
    "eval_episodes",   # a dialogue run's held-out episodes
    "reply_explore",   # exploration coins, random candidates and replay minibatches of a reply-DQN round
                       # (played in shards: (round, episode) keys the exploration of one episode)
    "dqn_step",        # exploration coins and random actions of a DQN shard's vector steps from call c
    "reply_replay",    # replay minibatches of a reply-DQN round played in shards
    "feedback_log",    # candidate sampling of a user-feedback log (`langrl.agents.reply_feedback`)
    "feedback_episodes",  # the reset seeds of its episodes
)
MASK64 = 2**64 - 1


def derive_seed(seed: int, stream: str, *keys: int) -> int:
    """A 63-bit seed for ``stream`` (one of :data:`STREAMS`) of the run seeded ``seed``, at ``keys``."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}")
    entropy = [seed & MASK64, STREAMS.index(stream), *(k & MASK64 for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def generator(seed: int, stream: str, *keys: int, device: torch.device | str | None = None) -> torch.Generator:
    """A torch generator seeded with :func:`derive_seed` (on ``device``, CPU by default)."""
    return torch.Generator(device=device or "cpu").manual_seed(derive_seed(seed, stream, *keys))
