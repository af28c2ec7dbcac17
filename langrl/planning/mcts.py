"""Monte Carlo tree search with PUCT (Silver et al. 2017, AlphaGo Zero; Rosin 2011): each simulation walks
down the tree choosing

    a* = argmax_a  Q(s, a) + c_puct P(a | s) sqrt(N(s)) / (1 + N(s, a))

(Q(s, a) = W(s, a) / N(s, a), the mean return after (s, a); ``unvisited_value`` where N(s, a) = 0;
sqrt(max(N(s), 1)) so that the prior alone decides a node's first choice), steps the world model on the
first edge it has not tried, estimates the new leaf's return with the value (random rollouts, or a value
function), and backs the discounted return G = r + gamma G' up the path: N(s, a) += 1, W(s, a) += G.

The tree is kept per decision (no reuse across real steps) and branches on actions, not on states: a
stochastic model's first draw of an edge is the one the tree keeps. The chosen action is the most visited
root action (ties: the higher Q, then one drawn with ``rng``). Depth ``max_depth`` counts actions from the root; a leaf
there is valued and not expanded. ``simulations`` and ``max_calls`` (world-model queries, rollouts
included) bound a decision; whichever ends first. Everything random is drawn from the ``rng`` of
``plan``, so a decision is a function of (state, rng state, cache contents of a deterministic model).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from langrl.planning.core import Budget, PlanDecision, RolloutValue, StatePrior, UniformPrior, ValueFn
from langrl.planning.world_models import CachedModel


class Node:
    """A state of the tree; its edges (one per admissible action) are filled in on first visit."""

    __slots__ = ("state", "actions", "priors", "n", "visits", "value_sum", "rewards", "dones", "children",
                 "value")

    def __init__(self, state: Any):
        self.state = state
        self.actions: list[str] = []
        self.priors: np.ndarray | None = None  # None: not expanded yet
        self.n = 0
        self.visits = np.zeros(0, dtype=np.int64)
        self.value_sum = np.zeros(0)
        self.rewards = np.zeros(0)
        self.dones = np.zeros(0, dtype=bool)
        self.children: list[Node | None] = []
        self.value: float | None = None  # the leaf estimate, computed once

    def expand(self, actions: list[str], priors: np.ndarray) -> None:
        k = len(actions)
        self.actions, self.priors = actions, priors
        self.visits, self.value_sum = np.zeros(k, dtype=np.int64), np.zeros(k)
        self.rewards, self.dones = np.zeros(k), np.zeros(k, dtype=bool)
        self.children = [None] * k

    def q(self, unvisited_value: float) -> np.ndarray:
        """(A,) mean returns, ``unvisited_value`` where an edge has no visit."""
        return np.where(self.visits > 0, self.value_sum / np.maximum(self.visits, 1), unvisited_value)


class MCTS:
    """PUCT tree search on a world model (see the module doc).

    :param model: the world model, behind its cache (`langrl.planning.world_models.cached`)
    :param simulations: simulations per decision
    :param c_puct: weight of the prior exploration term
    :param prior: p(a | s) (`UniformPrior`, `LMPrior`)
    :param value: leaf value; default :class:`RolloutValue` (random rollouts of ``rollout_depth`` steps)
    :param gamma: discount per step inside the tree (and of the default rollouts)
    :param max_depth: actions from the root to the deepest tree node
    :param max_calls: world-model queries per decision; None: only ``simulations`` bounds it
    :param unvisited_value: Q of an edge never tried ("first-play urgency")
    """

    def __init__(self, model: CachedModel, simulations: int = 100, c_puct: float = 1.0,
                 prior: StatePrior | None = None, value: ValueFn | None = None, gamma: float = 1.0,
                 max_depth: int = 50, rollout_depth: int = 20, max_calls: int | None = None,
                 unvisited_value: float = 0.0):
        if simulations < 1 or max_depth < 1:
            raise ValueError(f"simulations = {simulations}, max_depth = {max_depth}: both must be >= 1")
        self.model, self.simulations, self.c_puct = model, simulations, c_puct
        self.prior = prior if prior is not None else UniformPrior()
        self.budget = Budget(max_calls)
        self.value = value if value is not None else RolloutValue(rollout_depth, gamma, self.budget)
        self.gamma, self.max_depth, self.unvisited_value = gamma, max_depth, unvisited_value
        self.root: Node | None = None  # the last decision's tree, for inspection and tests

    def plan(self, state: Any, rng: np.random.Generator) -> PlanDecision:
        """Run the simulations from ``state``; the most visited root action."""
        t0, q0, c0 = time.perf_counter(), self.model.queries, self.model.calls
        prior_calls0 = getattr(self.prior, "calls", 0)
        self.budget.begin(self.model)
        root = self.root = Node(state)
        self.ensure_expanded(root)
        deepest, sims = 0, 0
        while sims < self.simulations and not self.budget.spent(self.model):
            deepest = max(deepest, self.simulate(root, rng))
            sims += 1
        q = root.q(float("nan"))
        # the most visited, then the highest Q; an exact tie is drawn with ``rng``: when nothing was found
        # (all returns 0, visits even) a fixed choice would repeat one action forever (turn left, on BabyAI)
        most = root.visits == root.visits.max()
        q_most = np.where(most, np.nan_to_num(q, nan=-math.inf), -math.inf)
        tied = np.flatnonzero(most & (q_most == q_most.max()))
        best = int(tied[0]) if len(tied) == 1 else int(rng.choice(tied))
        return PlanDecision(action=root.actions[best], actions=list(root.actions), values=q.tolist(),
                        visits=root.visits.tolist(), queries=self.model.queries - q0, calls=self.model.calls - c0,
                        prior_calls=getattr(self.prior, "calls", 0) - prior_calls0, depth=deepest,
                        seconds=time.perf_counter() - t0, extra={"simulations": sims})

    def ensure_expanded(self, node: Node) -> None:
        if node.priors is None:
            actions = list(self.model.actions(node.state))
            node.expand(actions, np.asarray(self.prior(self.model, node.state, actions), dtype=np.float64))

    def select(self, node: Node) -> int:
        """argmax_a Q(s, a) + c_puct P(a | s) sqrt(max(N(s), 1)) / (1 + N(s, a)); ties: the first."""
        assert node.priors is not None
        u = self.c_puct * node.priors * math.sqrt(max(node.n, 1)) / (1 + node.visits)
        return int(np.argmax(node.q(self.unvisited_value) + u))

    def simulate(self, root: Node, rng: np.random.Generator) -> int:
        """One selection-expansion-evaluation-backup pass; returns its depth (actions from the root)."""
        path: list[tuple[Node, int]] = []
        node, leaf_value = root, 0.0
        while True:
            self.ensure_expanded(node)
            a = self.select(node)
            path.append((node, a))
            child = node.children[a]
            if child is None:  # a new edge: one world-model step, then value the new leaf
                if self.budget.spent(self.model):  # no query left: this simulation adds nothing
                    return len(path) - 1
                nxt, reward, done = self.model.step(node.state, node.actions[a])
                node.rewards[a], node.dones[a] = reward, done
                child = node.children[a] = Node(nxt)
                if not done:
                    leaf_value = self.leaf_value(child, rng)
                break
            if node.dones[a]:
                break
            node = child
            if len(path) >= self.max_depth:  # the depth limit: value the node, never expand it
                leaf_value = self.leaf_value(node, rng)
                break
        self.backup(path, leaf_value)
        return len(path)

    def leaf_value(self, node: Node, rng: np.random.Generator) -> float:
        if node.value is None:
            node.value = float(self.value(self.model, node.state, rng))
        return node.value

    def backup(self, path: list[tuple[Node, int]], leaf_value: float) -> None:
        """G = r + gamma G' from the leaf up; each edge on the path: N += 1, W += G."""
        g = leaf_value
        for node, a in reversed(path):
            g = node.rewards[a] + self.gamma * g
            node.visits[a] += 1
            node.value_sum[a] += g
            node.n += 1


__all__ = ["MCTS", "Node"]
