"""Weighted sums of rewards: ``r(x, y) = sum_k w_k * r_k(x, y)``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

from langrl.rewards.base import ColumnUse, RewardFn, column_use, reward_name
from langrl.rewards.scoring import score


class WeightedSum:
    """Reward = ``sum_k weights[k] * rewards[k](prompt, completion)``.

    Each component is scored through `score`, so when one fails the `RewardError` names that
    component (e.g. 'length'), not the sum, and each is given only the prompt columns it declares.
    ``components`` exposes ``(name, weight, reward)`` triples so a logger can report each term
    (``reward/vader``) as well as the total.
    """

    def __init__(
        self, rewards: Sequence[RewardFn], weights: Sequence[float], name: str = "weighted_sum"
    ) -> None:
        if len(rewards) != len(weights):
            raise ValueError(f"weighted sum: {len(rewards)} rewards but {len(weights)} weights")
        if not rewards:
            raise ValueError("weighted sum: needs at least one reward")
        self.components: list[tuple[str, float, RewardFn]] = [
            (reward_name(r), float(w), r) for r, w in zip(rewards, weights, strict=True)
        ]
        self.name = name

    def column_use(self) -> ColumnUse:
        """The prompt columns any component takes (each component is given only its own)."""
        return reduce(ColumnUse.__or__, (column_use(r) for _, _, r in self.components), ColumnUse())

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        total = [0.0] * len(completions)
        for _, weight, reward in self.components:
            for i, value in enumerate(score(reward, prompts, completions, columns)):
                total[i] += weight * value
        return total

    def __repr__(self) -> str:
        terms = " + ".join(f"{w:g}*{n}" for n, w, _ in self.components)
        return f"WeightedSum({terms})"
