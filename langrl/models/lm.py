"""A causal LM with its tokenizer, and the tokenizer settings batched sampling needs."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LM:
    """A causal LM with its tokenizer. ``name`` is what the user asked for (short name, hub id or path)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Left padding for batched sampling; EOS doubles as PAD when the tokenizer has no pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
