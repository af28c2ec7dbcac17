"""The typed interfaces langrl's parts plug into each other through; LM-backed and hand-written
implementations both fit. Shapes: B a batch of states, A the admissible actions, H a hidden size.

- :class:`ChoicePolicy` acts in a text environment by scoring its admissible action strings (`LMPolicy`).
  A generative policy is a causal LM sampled by `langrl.rollout.tokens.sample`.
- :class:`ValueFunction` and :class:`QFunction`: V(s) from a state's representation; Q(s, .) over actions.
- :class:`RewardFn` (`langrl.rewards`): a batch of (prompt, completion) pairs -> one float each.
- :class:`Encoder`: texts -> features (`LMEncoder` for Stable-Baselines3).
- :class:`WorldModel`: (state, action) -> (next state, reward, done), in text (planners imagine with it).
- :class:`ActionPrior`: a distribution over action strings given an observation (`LMActionPrior`).
- :class:`RolloutWorker`: collects episodes with a versioned snapshot of the policy, in-process or remote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from langrl.rewards.base import RewardFn


class Decision(NamedTuple):
    """What a choice policy did in B states: ``actions`` (B,), their ``logprobs`` (B,), ``values`` (B,)
    and the ``logits`` (B, A) over all actions (log_softmax(logits) is the policy)."""

    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    logits: torch.Tensor


@runtime_checkable
class ChoicePolicy(Protocol):
    """A policy over a fixed list of admissible action strings, with a value estimate.

    ``prompt_ids(views)`` encodes the policy's views of B states (`langrl.envs.text.history`);
    calling it gives (B, A) logits and (B,) values with gradient; ``act`` samples (or takes the argmax)
    without gradient and records what an update needs. ``window`` is how many earlier (observation,
    action) pairs a view shows.
    """

    window: int

    @property
    def actions(self) -> list[str]: ...

    def prompt_ids(self, texts: Sequence[str]) -> list[list[int]]: ...

    def __call__(self, prompt_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def act(self, prompt_ids: Sequence[Sequence[int]], generator: torch.Generator | None = None,
            greedy: bool = False) -> Decision: ...


@runtime_checkable
class ValueFunction(Protocol):
    """V(s): (..., H) representations of states -> (...) values (`langrl.models.value.ValueHead`)."""

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class QFunction(Protocol):
    """Q(s, .): B text observations -> (B, A) action values over the admissible actions."""

    def q_values(self, observations: Sequence[str]) -> torch.Tensor: ...


@runtime_checkable
class Encoder(Protocol):
    """B texts -> (B, features_dim) features."""

    features_dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


@runtime_checkable
class WorldModel(Protocol):
    """A model of a text environment: ``step(state, action) -> (next_state, reward, done)``."""

    def step(self, state: str, action: str) -> tuple[str, float, bool]: ...


@runtime_checkable
class ActionPrior(Protocol):
    """A distribution over a fixed list of admissible action strings given a text observation.

    ``logprobs(observations)`` -> (B, A) log-probabilities, each row normalised over the A actions.
    `LMActionPrior` is the LM implementation; a table or a heuristic works as well.
    """

    actions: Sequence[str]

    def logprobs(self, observations: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class ObservationDecoder(Protocol):
    """Turns a batch of environment observations (B, ...) into their texts, e.g.
    ``functools.partial(langrl.envs.text.decode_ids, tokenizer)`` for `TokenizeObservation` ids."""

    def __call__(self, observations: np.ndarray) -> list[str]: ...


@runtime_checkable
class RolloutWorker(Protocol):
    """Collects episodes with the policy weights of ``version`` (a state dict: the LoRA adapter alone
    when there is one), from the random streams of ``seed`` and ``step`` (`langrl.run.seeds`), so that
    where it runs (in-process, a Ray actor) does not change what it returns."""

    def collect(self, weights: Mapping[str, torch.Tensor], version: int, seed: int, step: int) -> Any: ...


__all__ = ["ActionPrior", "ChoicePolicy", "Decision", "Encoder", "ObservationDecoder", "QFunction",
           "RewardFn", "RolloutWorker", "ValueFunction", "WorldModel"]
