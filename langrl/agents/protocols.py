"""The interfaces the agents code relies on; LM-backed and hand-written implementations both fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


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
