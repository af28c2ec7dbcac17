"""Text observations as fixed-length token ids, the form Stable-Baselines3 accepts.

SB3 has no ``Text`` space, so :class:`TokenizeObservation` turns each text into a ``Box`` of token ids
of shape (L,), right-padded with the tokenizer's pad id and truncated at L. Right padding keeps the
positions of the real tokens at 0..n-1, so a causal LM gives them the same hidden states as without
padding (they never attend to the pads after them). The text stays in ``info["text"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from transformers import PreTrainedTokenizerBase


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Texts -> (B, max_length) int64 token ids, right-padded with ``tokenizer.pad_token_id``."""
    pad = pad_id(tokenizer)
    out = np.full((len(texts), max_length), pad, dtype=np.int64)
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"][:max_length]
        out[i, : len(ids)] = ids
    return out


def decode_ids(tokenizer: PreTrainedTokenizerBase, ids: np.ndarray) -> list[str]:
    """(B, L) or (L,) right-padded token ids (any numeric dtype: SB3 may hand floats) -> texts."""
    rows = np.atleast_2d(np.asarray(ids)).astype(np.int64)
    pad = pad_id(tokenizer)
    texts = []
    for row in rows:
        n = len(row) - int(np.argmax(row[::-1] != pad)) if (row != pad).any() else 0
        texts.append(cast(str, tokenizer.decode(row[:n].tolist(), skip_special_tokens=False)))  # one sequence: str
    return texts


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id (EOS when the tokenizer has no pad token, as `prepare_tokenizer` arranges)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad observations with")
    return int(pad)


class TokenizeObservation(gym.Wrapper):
    """Text observation -> ``Box(0, vocab - 1, (max_length,), int64)`` of right-padded token ids.

    Texts longer than ``max_length`` tokens are cut (a warning-free truncation: size ``max_length`` for
    the longest description the environment writes). ``info["text"]`` keeps the full text.
    """

    def __init__(self, env: gym.Env, tokenizer: PreTrainedTokenizerBase, max_length: int = 256):
        super().__init__(env)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.observation_space = gym.spaces.Box(
            low=0, high=len(tokenizer) - 1, shape=(max_length,), dtype=np.int64
        )

    def encode(self, text: str) -> np.ndarray:
        """(max_length,) ids of one text."""
        return encode_texts(self.tokenizer, [text], self.max_length)[0]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        text, info = self.env.reset(seed=seed, options=options)
        return self.encode(text), {**info, "text": text}

    def step(self, action: Any):
        text, reward, terminated, truncated, info = self.env.step(action)
        return self.encode(text), reward, terminated, truncated, {**info, "text": text}
