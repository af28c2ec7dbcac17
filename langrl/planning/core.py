"""What every planner shares: the decision it returns, priors over a state's actions, leaf values, and the
count of world-model calls against a budget.

- A *prior* gives p(a | s) over the actions of a state: :class:`UniformPrior`, or :class:`LMPrior` around
  any `langrl.protocols.ActionPrior` (`LMActionPrior`: the LM scores the action strings after the state's
  text).
- A *value* estimates the return from a state: :class:`RolloutValue` (uniformly random actions until the
  episode ends or ``depth`` steps, as in classic MCTS), :class:`ZeroValue`, or any callable
  ``(model, state, rng) -> float`` (a learned value function).
- A :class:`Budget` counts the world-model queries of one decision and says when ``max_calls`` is spent;
  the model's own cache (`langrl.planning.world_models.CachedModel`) counts the calls that reached it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from langrl.planning.world_models import CachedModel

# (model, state, rng) -> an estimate of the return from ``state`` on
ValueFn = Callable[[CachedModel, Any, np.random.Generator], float]


class StatePrior(Protocol):
    """p(a | s) (A,) over ``actions``, the admissible actions of ``state`` (sums to 1)."""

    def __call__(self, model: CachedModel, state: Any, actions: Sequence[str]) -> np.ndarray: ...


class UniformPrior:
    """p(a | s) = 1 / A."""

    def __call__(self, model: CachedModel, state: Any, actions: Sequence[str]) -> np.ndarray:
        return np.full(len(actions), 1.0 / len(actions))


class ScoresActions(Protocol):
    """`langrl.protocols.ActionPrior` with ``actions`` read-only, so that a class holding a ``list[str]``
    (`LMActionPrior`) fits it for mypy too."""

    @property
    def actions(self) -> Sequence[str]: ...

    def logprobs(self, observations: Sequence[str]) -> np.ndarray: ...


class LMPrior:
    """p(a | s) from an `ActionPrior` (an LM scoring action strings) on the state's text, restricted to the
    state's admissible actions and renormalised; ``calls`` counts the states it scored."""

    def __init__(self, prior: ScoresActions):
        self.prior = prior
        self.index = {a: i for i, a in enumerate(prior.actions)}
        self.calls = 0

    def __call__(self, model: CachedModel, state: Any, actions: Sequence[str]) -> np.ndarray:
        missing = [a for a in actions if a not in self.index]
        if missing:
            raise ValueError(f"the prior does not score the actions {missing}; it knows {list(self.index)}")
        self.calls += 1
        logp = self.prior.logprobs([model.observation(state)])[0][[self.index[a] for a in actions]]
        p = np.exp(logp - logp.max())
        return p / p.sum()


class ZeroValue:
    """V(s) = 0: the search sees rewards only inside its tree."""

    def __call__(self, model: CachedModel, state: Any, rng: np.random.Generator) -> float:
        return 0.0


@dataclass
class RolloutValue:
    """The discounted return of one rollout of uniformly random actions from ``state``, until the episode
    ends or ``depth`` steps; stops early (with what it has) when the ``budget`` is spent."""

    depth: int = 20
    gamma: float = 1.0
    budget: Budget | None = None

    def __call__(self, model: CachedModel, state: Any, rng: np.random.Generator) -> float:
        total, discount = 0.0, 1.0
        for _ in range(self.depth):
            if self.budget is not None and self.budget.spent(model):
                break
            actions = model.actions(state)
            state, reward, done = model.step(state, actions[int(rng.integers(len(actions)))])
            total += discount * reward
            discount *= self.gamma
            if done:
                break
        return total


@dataclass
class Budget:
    """World-model queries of one decision: ``start`` is the model's count when it began; ``max_calls``
    None is no limit."""

    max_calls: int | None = None
    start: int = 0

    def begin(self, model: CachedModel) -> None:
        self.start = model.queries

    def used(self, model: CachedModel) -> int:
        return model.queries - self.start

    def spent(self, model: CachedModel) -> bool:
        return self.max_calls is not None and self.used(model) >= self.max_calls


@dataclass
class PlanDecision:
    """What a planner chose in one state, and what it cost.

    ``action`` the chosen action string; ``values`` its estimate of each root action's return (NaN where
    it has none); ``visits`` how often each was tried (MCTS simulations; 0/1 for the other planners);
    ``queries`` world-model steps asked for, ``calls`` those not answered by the cache; ``prior_calls``
    states the prior scored; ``depth`` the deepest step imagined; ``seconds`` the wall time.
    """

    action: str
    actions: list[str]
    values: list[float]
    visits: list[int]
    queries: int
    calls: int
    prior_calls: int = 0
    depth: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Planner(Protocol):
    """Chooses an action in ``state`` by imagining with its world model; deterministic given ``rng``."""

    model: CachedModel

    def plan(self, state: Any, rng: np.random.Generator) -> PlanDecision: ...


def best_index(values: Sequence[float], tie: Sequence[float] | None = None) -> int:
    """The index of the largest value; ties go to the larger ``tie`` value, then to the first."""
    best = 0
    for i in range(1, len(values)):
        if values[i] > values[best] or (values[i] == values[best] and tie is not None and tie[i] > tie[best]):
            best = i
    return best


__all__ = ["Budget", "LMPrior", "PlanDecision", "Planner", "RolloutValue", "StatePrior", "UniformPrior", "ValueFn",
           "ZeroValue", "best_index"]
