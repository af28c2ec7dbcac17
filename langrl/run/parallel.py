"""Data-parallel learners: the process group this learner belongs to, and the collectives it uses.

Data parallelism here is gradient accumulation across processes: each of W learners computes the
gradients of every W-th micro-batch of the same batch, weighted by its share of the batch as one learner
would, and the sums are added across learners before the one optimizer step. The result is the single
learner's gradient up to the order of float additions, and every learner then takes the same step.

`ACTIVE` is set only inside a learner process (`langrl.distributed.learners`); without it every
function here is the identity, so single-process code pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    rank: int
    world: int


ACTIVE: Group | None = None


def current() -> Group | None:
    """This process's learner group, or None in a single-process run."""
    return ACTIVE


def activate(rank: int, world: int) -> None:
    """Enter a learner group whose torch.distributed process group is already initialised."""
    global ACTIVE
    ACTIVE = Group(rank, world) if world > 1 else None


def mine(items: Sequence[T]) -> list[T]:
    """This learner's share of ``items``: every W-th one from its rank (all of them in one process)."""
    group = current()
    return list(items) if group is None else list(items[group.rank::group.world])


def mine_rows(rows: torch.Tensor) -> torch.Tensor:
    """This learner's rows of a minibatch: every W-th one from its rank (all of them in one process)."""
    group = current()
    return rows if group is None else rows[group.rank::group.world]


def reduce_gradients(params: Iterable[nn.Parameter]) -> None:
    """Sum the learners' gradients of ``params`` in place, as one flat all-reduce (a learner that computed
    none contributes zeros)."""
    if current() is None:
        return
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))  # type: ignore[union-attr]
        offset += n


def gather_lists(stats: dict[str, list[float]]) -> dict[str, list[float]]:
    """Every learner's logged values, in rank order, so all report the same means."""
    if current() is None:
        return stats
    parts: list[Any] = [None] * current().world  # type: ignore[union-attr]
    dist.all_gather_object(parts, stats)
    merged: dict[str, list[float]] = {}
    for part in parts:
        for key, values in part.items():
            merged.setdefault(key, []).extend(values)
    return merged


def gather(obj: T) -> list[T]:
    """``obj`` from every learner, in rank order."""
    if current() is None:
        return [obj]
    parts: list[Any] = [None] * current().world  # type: ignore[union-attr]
    dist.all_gather_object(parts, obj)
    return parts


def broadcast(obj: T | None) -> T:
    """Rank 0's ``obj`` on every learner (the others pass None)."""
    if current() is None:
        assert obj is not None, "a single process is its own rank 0"
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on some learner (a stop asked for on rank 0 stops them all)."""
    if current() is None:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t)
    return bool(t.item() > 0)
