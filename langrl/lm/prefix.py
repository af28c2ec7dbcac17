"""The reward each completion had earned before each of its tokens, for ``train.prefix_baseline``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from transformers import PreTrainedTokenizerBase

from langrl.rewards import RewardFn, score
from langrl.rollout import TokenRollout


def prefix_texts(tokenizer: PreTrainedTokenizerBase, rollout: TokenRollout) -> list[list[str]]:
    """For each completion, the text of its first t tokens for t = 0 .. Tc - 1; from its last token on, the
    whole completion (without its EOS), so that nothing is left to earn after the end."""
    eos = tokenizer.eos_token_id
    out = []
    width = rollout.completion_ids.size(1)
    for ids, length in zip(rollout.completion_ids.tolist(), rollout.completion_mask.sum(-1).tolist(), strict=True):
        ids = ids[:int(length)]
        whole = ids[:-1] if ids and ids[-1] == eos else ids
        texts = [cast(str, tokenizer.decode(ids[:t])) for t in range(min(len(ids), width))]
        texts += [cast(str, tokenizer.decode(whole))] * (width - len(texts))
        out.append(texts)
    return out


def prefix_rewards(reward: RewardFn, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                   rollout: TokenRollout, columns: Mapping[str, Sequence[Any]] | None = None) -> torch.Tensor:
    """(B, Tc): r(prompt_i, y_i,<t) - r(prompt_i, ""), the reward completion i had earned before token t.

    Token 0's entry is 0, so its advantage is the sequence's. One reward call over all B x Tc prefixes.
    """
    texts = prefix_texts(tokenizer, rollout)
    width = rollout.completion_ids.size(1)
    flat_prompts = [p for p in prompts for _ in range(width)]
    flat_columns = {k: [v for v in values for _ in range(width)] for k, values in (columns or {}).items()}
    scores = score(reward, flat_prompts, [t for row in texts for t in row], flat_columns or None)
    table = torch.tensor(scores, dtype=torch.float32).view(len(texts), width)
    return (table - table[:, :1]).to(rollout.completion_ids.device)
