"""A small randomly initialised LM for templated text (BabyAI observations, ...), built in-process.

The tokenizer is word-level, fitted on the texts the model will see: a token is a word, one digit or one
punctuation mark, each with the single space before it (`` wall`` and ``wall`` are two tokens), or a newline
or any other whitespace character. Decoding concatenates the tokens, so every text made of fitted tokens
round-trips exactly, newlines included. Digits are single tokens (and all twenty are always in the
vocabulary) so that any number can be written, e.g. a reward never seen in training. A piece the texts
never had decodes as ``<unk>``.

Why not the byte-level ``tiny`` model: a BabyAI observation is ~550 bytes but ~120 of these tokens, so a
transition costs about a fifth of the positions to train on and to decode.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from langrl.models.lm import LM, prepare_tokenizer

UNK, PAD, EOS = "<unk>", "<pad>", "<eos>"
# one piece per match: [space]word | [space]digit | [space]punctuation | newline | other whitespace
PIECE = r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]|\n|\s"
DIGITS = [d for digit in "0123456789" for d in (digit, " " + digit)]


def pieces(text: str) -> list[str]:
    """The tokens of ``text`` as strings (what the fitted tokenizer's pre-tokenizer splits it into)."""
    return re.findall(PIECE, text)


def word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the pieces of ``texts`` (and every digit), ids in sorted order after
    ``<unk>``, ``<pad>``, ``<eos>`` (0, 1, 2): the same texts give the same ids in any order."""
    vocab_pieces = sorted({p for text in texts for p in pieces(text)} | set(DIGITS))
    vocab = {tok: i for i, tok in enumerate([UNK, PAD, EOS, *vocab_pieces])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([UNK, PAD, EOS])
    # no clean-up of "tokenization spaces": it would delete the space of " ." and break the round trip
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD, eos_token=EOS,
                                   clean_up_tokenization_spaces=False)
    prepare_tokenizer(fast)
    return fast


def small_text_lm(texts: Iterable[str], hidden_size: int = 128, num_layers: int = 4, seed: int = 0,
                  max_positions: int = 2048) -> LM:
    """A random Llama of ``num_layers`` layers of width ``hidden_size`` over :func:`word_tokenizer` of
    ``texts``; deterministic given the texts and ``seed``. It saves with ``save_pretrained`` (model and
    tokenizer) and loads back with `langrl.models.load_lm` (the folder)."""
    tokenizer = word_tokenizer(texts)
    heads = max(1, hidden_size // 32)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return LM(model=model, tokenizer=tokenizer, name="small")
