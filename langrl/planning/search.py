"""Beam search and breadth-first search over a world model, with a depth limit and a budget of queries.

- :class:`BeamSearch` keeps the ``width`` best partial plans at each depth, scored by

      score(a_1..a_d) = sum_t gamma^(t-1) r_t  +  gamma^d V(s_d)  +  prior_weight sum_t log p(a_t | s_(t-1))

  (V the leaf value, zero by default; the prior term is how an LM steers the beam, as in LM reasoning
  with beam search). A plan that ends the episode stops growing and keeps its return.
- :class:`BFS` visits states in order of depth, skipping states whose ``key`` it has seen, and stops at
  the depth where it first finds a positive reward (a shortest rewarded plan) or at ``depth``.

Both return the first action of the best plan found; when no plan scores above the others (nothing
rewarding in reach), the action is drawn uniformly with ``rng``. Ties go to the plan found first, so a
decision is a function of the state and ``rng``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from langrl.planning.core import Budget, PlanDecision, StatePrior, ValueFn, ZeroValue
from langrl.planning.world_models import CachedModel


@dataclass
class Plan:
    """A partial plan: where it ends, its first action (index into the root's actions), its discounted
    return, its summed prior log-probability, its length, and whether the episode ended."""

    state: Any
    first: int
    ret: float = 0.0
    logp: float = 0.0
    depth: int = 0
    done: bool = False
    score: float = 0.0


def decide(root_actions: list[str], plans: list[Plan], rng: np.random.Generator, queries: int, calls: int,
           t0: float, prior_calls: int = 0) -> PlanDecision:
    """The first action of the best-scoring plan (the first such): each root action is worth its best plan;
    when all root actions are worth the same (nothing tells them apart), one drawn uniformly with ``rng``."""
    values = [-math.inf] * len(root_actions)
    visits = [0] * len(root_actions)
    for p in plans:
        values[p.first] = max(values[p.first], p.score)
        visits[p.first] += 1
    if max(values) > min(values):
        best = values.index(max(values))
    else:
        best = int(rng.integers(len(root_actions)))
    return PlanDecision(action=root_actions[best], actions=list(root_actions),
                    values=[v if v > -math.inf else float("nan") for v in values], visits=visits, queries=queries,
                    calls=calls, prior_calls=prior_calls, depth=max((p.depth for p in plans), default=0),
                    seconds=time.perf_counter() - t0)


class BeamSearch:
    """Keep the ``width`` best plans per depth up to ``depth`` actions (see the module doc)."""

    def __init__(self, model: CachedModel, width: int = 8, depth: int = 10, prior: StatePrior | None = None,
                 prior_weight: float = 0.0, value: ValueFn | None = None, gamma: float = 1.0,
                 max_calls: int | None = None):
        if width < 1 or depth < 1:
            raise ValueError(f"width = {width}, depth = {depth}: both must be >= 1")
        if prior_weight and prior is None:
            raise ValueError("prior_weight > 0 needs a prior")
        self.model, self.width, self.depth, self.prior, self.prior_weight = model, width, depth, prior, prior_weight
        self.value = value if value is not None else ZeroValue()
        self.gamma, self.budget = gamma, Budget(max_calls)

    def plan(self, state: Any, rng: np.random.Generator) -> PlanDecision:
        t0, q0, c0 = time.perf_counter(), self.model.queries, self.model.calls
        prior_calls0 = getattr(self.prior, "calls", 0)
        self.budget.begin(self.model)
        root_actions = list(self.model.actions(state))
        beam, finished = [Plan(state, -1)], []
        for d in range(self.depth):
            grown = self.grow(beam, d, rng)
            finished += [p for p in grown if p.done]
            # a stable sort: equal scores keep the order they were found in
            beam = sorted((p for p in grown if not p.done), key=lambda p: -p.score)[: self.width]
            if not beam or self.budget.spent(self.model):
                break
        plans = finished + [p for p in beam if p.first >= 0]
        return decide(root_actions, plans, rng, self.model.queries - q0, self.model.calls - c0, t0,
                      getattr(self.prior, "calls", 0) - prior_calls0)

    def grow(self, beam: list[Plan], d: int, rng: np.random.Generator) -> list[Plan]:
        """Every one-action extension of the beam's plans, scored; stops when the budget is spent."""
        out: list[Plan] = []
        for plan in beam:
            actions = list(self.model.actions(plan.state))
            logp = np.zeros(len(actions))
            if self.prior is not None and self.prior_weight:
                logp = np.log(np.maximum(self.prior(self.model, plan.state, actions), 1e-300))
            for i, action in enumerate(actions):
                if self.budget.spent(self.model):
                    return out
                nxt, reward, done = self.model.step(plan.state, action)
                p = Plan(nxt, i if plan.first < 0 else plan.first, plan.ret + self.gamma**d * reward,
                         plan.logp + float(logp[i]), d + 1, done)
                leaf = 0.0 if done else self.gamma ** (d + 1) * float(self.value(self.model, nxt, rng))
                p.score = p.ret + leaf + self.prior_weight * p.logp
                out.append(p)
        return out


class BFS:
    """Breadth-first search to ``depth`` actions, skipping repeated states (by ``model.key``); stops after
    the first depth with a positive reward when ``stop_at_reward``. A plan's score is its discounted return."""

    def __init__(self, model: CachedModel, depth: int = 10, gamma: float = 1.0, max_calls: int | None = None,
                 stop_at_reward: bool = True):
        if depth < 1:
            raise ValueError(f"depth = {depth}: must be >= 1")
        self.model, self.depth, self.gamma, self.stop_at_reward = model, depth, gamma, stop_at_reward
        self.budget = Budget(max_calls)

    def plan(self, state: Any, rng: np.random.Generator) -> PlanDecision:
        t0, q0, c0 = time.perf_counter(), self.model.queries, self.model.calls
        self.budget.begin(self.model)
        root_actions = list(self.model.actions(state))
        seen: set[Hashable] = {self.model.key(state)}
        frontier, plans = [Plan(state, -1)], []
        for d in range(self.depth):
            layer: list[Plan] = []
            for plan in frontier:
                for i, action in enumerate(self.model.actions(plan.state)):
                    if self.budget.spent(self.model):
                        break
                    nxt, reward, done = self.model.step(plan.state, action)
                    ret = plan.ret + self.gamma**d * reward
                    p = Plan(nxt, i if plan.first < 0 else plan.first, ret, 0.0, d + 1, done, ret)
                    if done:
                        plans.append(p)
                    elif (key := self.model.key(nxt)) not in seen:
                        seen.add(key)
                        layer.append(p)
            frontier = layer
            if (self.stop_at_reward and any(p.score > 0 for p in plans)) or not frontier or self.budget.spent(
                    self.model):
                break
        plans += frontier  # the unfinished plans where the search stopped score their return so far
        return decide(root_actions, plans, rng, self.model.queries - q0, self.model.calls - c0, t0)


__all__ = ["BFS", "BeamSearch", "Plan", "decide"]
