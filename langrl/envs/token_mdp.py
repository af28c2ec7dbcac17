"""The toy token MDP as a tabular Gymnasium environment: writing L tokens from a vocabulary of V.

A state is the prefix written so far (the root is the empty prefix), an action the next token; after L
tokens the episode terminates with the reward of the completion. The prefix tree has
``1 + V + ... + V^L`` states, so tabular methods and their exact oracles (`langrl.agents.tabular`) run on
it, and a table policy's distribution over the V^L completions is exact: soft Q-learning toward the
reference LM (``pi0(a | prefix)`` from :func:`prefix_logprobs`) is compared with the posterior
``pi* = pi0 exp(r / beta) / Z`` of `langrl.bayes` (:func:`sequence_logprobs`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch
from transformers import PreTrainedModel

from langrl.bayes.exact import enumerate_sequences
from langrl.models.forward import completion_logits


class TokenTree:
    """Indices of the prefixes of V-token sequences of length up to L: depth by depth, lexicographic
    within a depth (the order of `langrl.bayes.exact.enumerate_sequences`)."""

    def __init__(self, vocab_size: int, length: int):
        self.vocab_size, self.length = vocab_size, length
        self.offsets = [sum(vocab_size**k for k in range(d)) for d in range(length + 2)]
        self.n_states = self.offsets[length + 1]

    def state(self, prefix: Sequence[int]) -> int:
        """The index of ``prefix``."""
        value = 0
        for token in prefix:
            value = value * self.vocab_size + int(token)
        return self.offsets[len(prefix)] + value

    def prefix(self, state: int) -> list[int]:
        """The prefix of index ``state``."""
        depth = max(d for d in range(self.length + 1) if self.offsets[d] <= state)
        value, out = state - self.offsets[depth], []
        for _ in range(depth):
            value, token = divmod(value, self.vocab_size)
            out.append(token)
        return out[::-1]

    def states(self, sequences: torch.Tensor) -> torch.Tensor:
        """(N, L) sequences -> (N, L) index of each sequence's prefix of length 0..L-1 (where it acts)."""
        n, length = sequences.shape
        out = torch.zeros(n, length, dtype=torch.long)
        value = torch.zeros(n, dtype=torch.long)
        for d in range(length):
            out[:, d] = self.offsets[d] + value
            value = value * self.vocab_size + sequences[:, d]
        return out


class TokenTreeEnv(gym.Env[Any, Any]):
    """Write ``length`` tokens of a ``vocab_size`` vocabulary; the last one ends the episode with
    ``rewards[i]``, i the completion's index in lexicographic order. ``P`` is the exact model."""

    metadata = {"render_modes": []}

    def __init__(self, rewards: Sequence[float], vocab_size: int = 8, length: int = 4):
        if len(rewards) != vocab_size**length:
            raise ValueError(f"need one reward per completion: {vocab_size}**{length}, got {len(rewards)}")
        self.tree = TokenTree(vocab_size, length)
        self.rewards = [float(r) for r in rewards]
        self.observation_space = gym.spaces.Discrete(self.tree.n_states)
        self.action_space = gym.spaces.Discrete(vocab_size)
        self.s, self.depth, self.value = 0, 0, 0  # the prefix: its index, length and value in base V

    @functools.cached_property
    def P(self) -> dict[int, dict[int, list[tuple[float, int, float, bool]]]]:  # noqa: N802 - Gymnasium's name
        """The exact model, built on first use (the oracles need it; stepping does not, and an environment
        pickled mid-episode in a checkpoint stays small without it)."""
        return self.transition_table()

    def transition_table(self) -> dict[int, dict[int, list[tuple[float, int, float, bool]]]]:
        """``P[s][a] = [(1.0, s', r, terminated)]``; completed sequences are absorbing (never acted in)."""
        tree, table = self.tree, {}
        leaves = tree.offsets[tree.length]
        for s in range(tree.n_states):
            if s >= leaves:
                table[s] = {a: [(1.0, s, 0.0, True)] for a in range(tree.vocab_size)}
                continue
            prefix = tree.prefix(s)
            table[s] = {}
            for a in range(tree.vocab_size):
                nxt = tree.state([*prefix, a])
                done = len(prefix) + 1 == tree.length
                table[s][a] = [(1.0, nxt, self.rewards[nxt - leaves] if done else 0.0, done)]
        return table

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.s, self.depth, self.value = 0, 0, 0
        return 0, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        """Append token ``action``; the same outcome as ``P[s][action]``, computed directly."""
        tree = self.tree
        if self.depth == tree.length:  # a completed sequence is absorbing
            return self.s, 0.0, True, False, {}
        self.depth, self.value = self.depth + 1, self.value * tree.vocab_size + int(action)
        self.s = tree.offsets[self.depth] + self.value
        done = self.depth == tree.length
        return self.s, self.rewards[self.value] if done else 0.0, done, False, {}


@torch.inference_mode()
def prefix_logprobs(model: PreTrainedModel, prompt_ids: Sequence[int], tree: TokenTree,
                    temperature: float = 1.0) -> torch.Tensor:
    """(S, V) log pi0(a | prompt, prefix) for every non-terminal prefix of ``tree`` (uniform at the leaves),
    from one pass over the V^(L-1) longest prefixes: position d of each scores its prefix of length d."""
    v, length = tree.vocab_size, tree.length
    table = torch.full((tree.n_states, v), -torch.log(torch.tensor(float(v))).item(), dtype=torch.float64)
    longest = enumerate_sequences(v, length - 1)
    dummy = torch.zeros(len(longest), 1, dtype=torch.long)
    device = next(model.parameters()).device
    ids = torch.cat([torch.tensor(list(prompt_ids)).expand(len(longest), -1), longest, dummy], 1).to(device)
    logits = completion_logits(model, ids, torch.ones_like(ids), length, temperature)
    logp = logits.double().log_softmax(-1).cpu()  # (N, L, V): position d conditions on longest[:, :d]
    states = tree.states(torch.cat([longest, dummy], 1))  # (N, L)
    table[states.reshape(-1)] = logp.reshape(-1, v)
    return table


def sequence_logprobs(tree: TokenTree, logp_table: torch.Tensor) -> torch.Tensor:
    """(S, V) per-prefix log-probabilities -> (V^L,) log-probability of every completion (lexicographic)."""
    sequences = enumerate_sequences(tree.vocab_size, tree.length)
    states = tree.states(sequences)
    return logp_table[states, sequences].sum(-1)
