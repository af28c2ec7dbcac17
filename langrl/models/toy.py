"""The model of the toy token MDP (`langrl.envs.toy`): a V-letter vocabulary, completions of exactly L
tokens, few enough to enumerate.

The "language model" is a tiny random Llama over the letters ``a, b, c, ...``; it has no EOS, so every
completion has exactly ``sampling.max_new_tokens`` letters and there are V**L of them (8**4 = 4096 by
default). Its weights are drawn with a large initialisation scale so that the reference distribution is
far from uniform, which makes the optimum pi* = pi0 exp(r / beta) / Z non-trivial.
"""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from langrl.models.lm import LM

TOY_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def toy_tokenizer(vocab_size: int = 8) -> PreTrainedTokenizerFast:
    """One token per letter, ids 0..V-1 for ``a, b, ...``; no special tokens, ``a`` doubles as padding."""
    letters = TOY_LETTERS[:vocab_size]
    tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(letters)}, unk_token=letters[0]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=letters[0])
    fast.padding_side = "left"
    return fast


def toy_lm(seed: int = 0, vocab_size: int = 8, hidden_size: int = 64, num_layers: int = 2,
           init_scale: float = 0.3) -> LM:
    """The toy reference LM: deterministic given ``seed``; ``init_scale`` sets how peaked it is.

    No ``pad_token_id`` in the config: it would zero the embedding of ``a`` (nn.Embedding padding_idx),
    and a prompt of ``a`` would then leave the first completion token uniform and untrainable.
    """
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=64, initializer_range=init_scale, pad_token_id=None, bos_token_id=None,
        eos_token_id=None, tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return LM(model=model, tokenizer=toy_tokenizer(vocab_size), name="toy")
