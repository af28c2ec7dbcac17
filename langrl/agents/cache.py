"""A bounded least-recently-used cache: frozen LMs see the same observations again and again.

In CartPole-Text or BabyAI most observations recur within a run (and PPO re-reads each rollout for
several epochs), so a frozen encoder, prior or judge computes each distinct text once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most ``max_size`` entries; a hit makes an entry most recent, a put past the bound evicts the
    least recent. ``hits`` and ``misses`` count lookups (for logs and tests)."""

    def __init__(self, max_size: int):
        if max_size < 0:
            raise ValueError(f"cache max_size = {max_size}; give a count >= 0 (0 turns caching off)")
        self.max_size = max_size
        self.data: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now most recent), or None."""
        if key in self.data:
            self.hits += 1
            self.data.move_to_end(key)
            return self.data[key]
        self.misses += 1
        return None

    def put(self, key: K, value: V) -> None:
        if self.max_size == 0:
            return
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.max_size:
            self.data.popitem(last=False)

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is cached; neither counted as a lookup nor made recent."""
        return key in self.data

    def clear(self) -> None:
        self.data.clear()
