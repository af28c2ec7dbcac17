"""Text observations as fixed-length token ids, the form Stable-Baselines3 accepts.

SB3 has no ``Text`` space, so :class:`TokenizeObservation` turns each text into a ``Box`` of token ids
of shape (L,), right-padded with the tokenizer's pad id and truncated at L. Right padding keeps the
positions of the real tokens at 0..n-1, so a causal LM gives them the same hidden states as without
padding (they never attend to the pads after them). The text stays in ``info["text"]``.

The tokenizer may be given by model name (``"smollm2-135m-instruct"``, ``"tiny"``, a folder, a hub id), so
that an RL Zoo YAML can build the wrapper (``env_wrapper``: ``{tokenizer: tiny, max_length: 64}``), and
:class:`DecodeIds` decodes ids with a tokenizer given by name (it pickles as the name: a saved agent holds
no tokenizer).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from langrl.errors import ConfigError
from langrl.models.lm import prepare_tokenizer
from langrl.models.loading import IN_PROCESS, load_lm, locate


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


@functools.cache
def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer ``load_lm(name)`` has, loaded once per process. A local folder with tokenizer files (an
    embedded model's converted folder among them) is read without the model's weights."""
    folder = None if name in IN_PROCESS else Path(locate(name))
    if folder is None or not (folder / "tokenizer_config.json").is_file() or (folder / "adapter_config.json").exists():
        return load_lm(name, device="cpu").tokenizer  # in-process models, hub ids, LoRA checkpoints
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prepare_tokenizer(tokenizer)
    return tokenizer


def as_tokenizer(tokenizer: PreTrainedTokenizerBase | str) -> PreTrainedTokenizerBase:
    """A tokenizer as given, or the tokenizer of the model of that name."""
    if isinstance(tokenizer, str):
        return load_tokenizer(tokenizer)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ConfigError(f"tokenizer = {type(tokenizer).__name__} object: give a Hugging Face tokenizer (e.g. "
                          f"lm.tokenizer) or a model name such as 'smollm2-135m-instruct' or 'tiny'")
    return tokenizer


@dataclass(frozen=True)
class DecodeIds:
    """``ids (B, L) -> texts`` (:func:`decode_ids`) with the tokenizer of the model named ``tokenizer``: an
    `ObservationDecoder` that pickles as the name."""

    tokenizer: str

    def __call__(self, observations: np.ndarray) -> list[str]:
        return decode_ids(load_tokenizer(self.tokenizer), observations)


class TokenizeObservation(gym.Wrapper):
    """Text observation -> ``Box(0, vocab - 1, (max_length,), int64)`` of right-padded token ids.

    Texts longer than ``max_length`` tokens are cut (a warning-free truncation: size ``max_length`` for
    the longest description the environment writes). ``info["text"]`` keeps the full text. ``tokenizer``
    is a tokenizer or a model name (see the module docstring).
    """

    def __init__(self, env: gym.Env, tokenizer: PreTrainedTokenizerBase | str, max_length: int = 256):
        super().__init__(env)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ConfigError(f"max_length = {max_length!r}: give a positive number of tokens, e.g. max_length=64")
        self.tokenizer = as_tokenizer(tokenizer)
        self.max_length = max_length
        self.observation_space = gym.spaces.Box(
            low=0, high=len(self.tokenizer) - 1, shape=(max_length,), dtype=np.int64
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
