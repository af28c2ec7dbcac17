"""A step's rollout in shards: which prompts each shard samples, its random stream, and the join.

Shard k of step s always samples the same prompts with the same stream, (seed, "sampling", s, k), so
whether the shards run one after another in the learner or at once on Ray actors changes nothing. One
shard keeps the single-process trainer's stream, (seed, "sampling", s).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from langrl.rollout import TokenRollout
from langrl.run import seeds


def shard_indices(indices: Sequence[int], shards: int) -> list[list[int]]:
    """Cut a step's prompt indices into ``shards`` contiguous pieces, as even as possible (the first
    ``len % shards`` one longer); a piece may be empty when there are fewer prompts than shards."""
    n, rest = divmod(len(indices), shards)
    out, start = [], 0
    for k in range(shards):
        size = n + (1 if k < rest else 0)
        out.append(list(indices[start:start + size]))
        start += size
    return out


def shard_generator(seed: int, step: int, shard: int, shards: int,
                    device: torch.device | str | None = None) -> torch.Generator:
    """The sampling stream of ``shard`` of ``step``; with one shard, the unsharded trainer's stream."""
    keys = (step,) if shards == 1 else (step, shard)
    return seeds.generator(seed, "sampling", *keys, device=device)


def pad_left(t: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return F.pad(t, (width - t.size(1), 0), value=value)


def pad_right(t: torch.Tensor, width: int, value: float = 0.0) -> torch.Tensor:
    return F.pad(t, (0, width - t.size(1)), value=value)


def pad_edge(t: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad (B, T) by repeating each row's last entry."""
    return torch.cat([t, t[:, -1:].expand(-1, width - t.size(1))], dim=1)


def join_rollouts(parts: Sequence[TokenRollout], pad_token_id: int) -> TokenRollout:
    """Stack the shards' rollouts row-wise, in shard order: prompts left-padded, completions right-padded
    to the widest. Padding is masked out everywhere it could be read."""
    if len(parts) == 1:
        return parts[0]
    tp = max(p.prompt_ids.size(1) for p in parts)
    tc = max(p.completion_ids.size(1) for p in parts)

    def cat_right(field: str, value: float = 0.0) -> torch.Tensor | None:
        tensors = [getattr(p, field) for p in parts]
        if all(t is None for t in tensors):
            return None
        if any(t is None for t in tensors):
            raise ValueError(f"rollout shards disagree on whether they carry {field}")
        return torch.cat([pad_right(t, tc, value) for t in tensors])

    return TokenRollout(
        prompt_ids=torch.cat([pad_left(p.prompt_ids, tp, pad_token_id) for p in parts]),
        prompt_mask=torch.cat([pad_left(p.prompt_mask, tp, 0) for p in parts]),
        completion_ids=cast_tensor(cat_right("completion_ids", pad_token_id)),
        completion_mask=cast_tensor(cat_right("completion_mask")),
        logprobs=cast_tensor(cat_right("logprobs")),
        values=cat_right("values"),
        context_mask=cat_right("context_mask"),
    )


def join_prefix_rewards(parts: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """The shards' prefix rewards (B_k, T_k) as one (B, T) table. Past a completion's end its entry is the
    whole completion's, so repeating the last column is exactly what the joined rollout's table holds."""
    if all(p is None for p in parts):
        return None
    tables = [p for p in parts if p is not None]
    if len(tables) != len(parts):
        raise ValueError("rollout shards disagree on whether they carry prefix rewards")
    width = max(t.size(1) for t in tables)
    return torch.cat([pad_edge(t, width) for t in tables])


def cast_tensor(t: torch.Tensor | None) -> torch.Tensor:
    assert t is not None, "a rollout always carries its completions"
    return t
