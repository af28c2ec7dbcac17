"""Completions packed into few sequences for scoring: each prompt once, padding never fed.

A batch of prompt + completion rows (left-padded prompts, right-padded completions) wastes work when it
is scored row by row: the G completions of a group repeat their prompt G times, and completions that
stopped early are padded to the longest. Packing lays each group out as one sequence

    [prompt] [completion 1 minus its last token] [completion 2 minus its last token] ...

with position ids that restart after the prompt for every completion and a block attention mask (each
completion sees the prompt and its own earlier tokens, never another completion). Every weight then
multiplies one stacked input, and only real tokens go through the network: the prompt's last token
predicts each completion's first token, and a completion's last token predicts nothing scored, so it is
not fed. The result equals the row-by-row forward up to float rounding (``tests/test_packing.py``).

Attention under a dense mask costs every (query, key) pair of a sequence, so packing k completions of
n tokens after a prompt of p costs (p + k n)^2 pairs instead of k (p + n)^2: worth it while the prompt
tokens saved outweigh the pairs added. With ``ratio`` = weight-product FLOPs per token / attention
FLOPs per pair (about 3070 for SmolLM2-135M, 145 for the tests' 2-layer toy), the cost per completion,
(p c + p^2 a) / k + k n^2 a + const, is least at sequences of about p + sqrt(p (ratio + p)) tokens:
376 for a 37-token prompt on SmolLM2, 13 for the toy's 1-token prompt. Sequences stop there, and at
``MAX_PACKED_TOKENS`` (the mask's memory); a group that does not fit spreads over several sequences,
each repeating the prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

MAX_PACKED_TOKENS = 2048  # longest packed sequence: its boolean mask is L x L bytes
PACKING_ATTENTION = ("sdpa", "eager")  # implementations that take a custom 4D mask (bool / additive)


@dataclass
class Packed:
    """Packed sequences (left-padded to L) and where each scored completion position lands.

    input_ids, position_ids: (R, L); segments: (R, L), -1 on padding, 0 on the prompt, k > 0 on the k-th
    completion of the sequence. ``keep`` is the number of last positions whose logits are needed, and
    ``rows``, ``cols`` (B, Tc) index, for every completion position of the original batch, the packed
    sequence and the position among those ``keep`` whose output predicts it (masked positions point at a
    valid one, so their values are finite and meaningless).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    keep: int
    rows: torch.Tensor
    cols: torch.Tensor

    def attention_mask(self, implementation: str, dtype: torch.dtype) -> torch.Tensor:
        """(R, 1, L, L) mask for the model's attention implementation: boolean (True = attend) for SDPA,
        additive (0 / most negative) for eager."""
        seg = self.segments
        length = seg.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=seg.device).tril()
        key, query = seg[:, None, :], seg[:, :, None]
        allowed = causal & (key >= 0) & ((key == 0) | (key == query))
        allowed |= torch.eye(length, dtype=torch.bool, device=seg.device)  # padding attends to itself
        allowed = allowed[:, None]
        if implementation == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill_(
            ~allowed, torch.finfo(dtype).min)

    def select(self, outputs: torch.Tensor) -> torch.Tensor:
        """(R, keep, ...) outputs of the last ``keep`` positions -> (B, Tc, ...) per completion position."""
        return outputs[self.rows, self.cols]


def token_pair_ratio(model: nn.Module) -> float:
    """FLOPs of the weight products per token over attention FLOPs per (query, key) pair: decoder
    parameters / (2 x hidden size x layers). Infinite when the config does not say."""
    config = model.config
    hidden, layers = getattr(config, "hidden_size", None), getattr(config, "num_hidden_layers", None)
    if not hidden or not layers:
        return math.inf
    lm: Any = model  # a transformers model: nn.Module types its methods as Tensor | Module
    embeddings = {id(m.weight): m.weight.numel() for m in (lm.get_input_embeddings(),
                                                          lm.get_output_embeddings()) if m is not None}
    decoder = sum(p.numel() for p in model.parameters()) - sum(embeddings.values())
    return decoder / (2 * hidden * layers)


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
         ratio: float = math.inf) -> Packed:
    """Pack left-padded rows (B, T) whose last ``completion_len`` columns are the completions.

    Consecutive rows with the same prompt share a packed sequence of at most the cheapest length for
    ``ratio`` (see the module's docstring; at least one completion each). Tokens with mask 0 are left
    out: as in a padded forward, they are invisible to the others and do not advance positions.
    """
    device = input_ids.device
    ids, mask = input_ids.cpu(), attention_mask.cpu().bool()
    split = ids.size(1) - completion_len
    prompt_ids, prompt_mask = ids[:, :split], mask[:, :split]
    comp_ids, comp_mask = ids[:, split:], mask[:, split:]
    prompt_len = prompt_mask.sum(-1)
    if (prompt_len == 0).any():
        row = int((prompt_len == 0).nonzero()[0])
        raise ValueError(f"row {row} has no prompt token: nothing predicts its first completion token")
    rank = comp_mask.cumsum(-1) - 1  # index of each real completion token among its row's real tokens
    fed_len = (comp_mask.sum(-1) - 1).clamp(min=0)  # the last token predicts nothing scored: not fed
    same = (prompt_ids[1:] == prompt_ids[:-1]) | ~prompt_mask[1:]
    same = same.all(-1) & (prompt_len[1:] == prompt_len[:-1])
    plan = Plan(torch.cat([torch.ones(1, dtype=torch.bool), ~same]).tolist(), prompt_len.tolist(),
                fed_len.tolist(), ratio)
    seq, offset, member = torch.tensor(plan.seq), torch.tensor(plan.offset), torch.tensor(plan.member)
    sizes, first = torch.tensor(plan.sizes), torch.tensor(plan.first_row)
    length = int(sizes.max())
    pad = length - sizes  # left padding of each sequence
    out = [torch.zeros(len(sizes), length, dtype=torch.long) for _ in range(3)]
    out[2].fill_(-1)
    # Prompts: the real (last ``prompt_len``) columns of each sequence's first row, after its padding.
    s, j = prompt_mask[first].nonzero(as_tuple=True)
    at = pad[s] + j - (split - prompt_len[first][s])
    place(out, s, at, prompt_ids[first][s, j], at - pad[s], 0)
    # Completions: every real token but the last, after the earlier completions of the sequence.
    b, t = (comp_mask & (rank < fed_len[:, None])).nonzero(as_tuple=True)
    at = pad[seq[b]] + offset[b] + rank[b, t]
    place(out, seq[b], at, comp_ids[b, t], prompt_len[b] + rank[b, t], member[b])
    # Scored: the prompt's last token predicts each completion's first token, every fed token the next.
    prompt_end = pad + prompt_len[first] - 1  # per sequence
    after = (pad[seq] + offset)[:, None] + rank - 1
    cols = torch.where(comp_mask & (rank > 0), after, prompt_end[seq][:, None])
    first_scored = int(prompt_end.min())
    packed_ids, positions, segments = (x.to(device) for x in out)
    return Packed(packed_ids.to(ids.dtype), positions, segments, length - first_scored,
                  seq[:, None].expand_as(cols).to(device), (cols - first_scored).to(device))


def place(out: list[torch.Tensor], seq: torch.Tensor, col: torch.Tensor, tokens: torch.Tensor,
          positions: torch.Tensor, segment: torch.Tensor | int) -> None:
    """Write tokens, their position ids and segment into the packed (ids, positions, segments)."""
    for target, value in zip(out, (tokens, positions, segment), strict=True):
        target[seq, col] = value


class Plan:
    """Rows placed into sequences: a new one where the prompt changes or where the current one would
    pass its length limit. Per row: its sequence, the offset of its fed tokens there and its 1-based
    member index; per sequence: its size and first row (whose prompt it carries)."""

    def __init__(self, new_run: list[bool], prompt_len: list[int], fed_len: list[int], ratio: float):
        self.seq: list[int] = []
        self.offset: list[int] = []
        self.member: list[int] = []
        self.sizes: list[int] = []
        self.first_row: list[int] = []
        limit = 0.0
        for row, (new, p, n) in enumerate(zip(new_run, prompt_len, fed_len, strict=True)):
            if new or self.sizes[-1] + n > limit:
                limit = min(MAX_PACKED_TOKENS, p + math.sqrt(p * (ratio + p)))
                self.sizes.append(p)
                self.first_row.append(row)
            self.seq.append(len(self.sizes) - 1)
            self.offset.append(self.sizes[-1])
            self.member.append(len(self.seq) - self.first_row[-1])
            self.sizes[-1] += n
