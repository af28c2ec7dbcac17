"""Tier 1: the planners on tiny hand-built trees, against visit counts, values and plans computed by hand;
determinism given a seed; depth limits and budgets."""

from __future__ import annotations

import numpy as np
import pytest

from langrl.planning import BFS, MCTS, BeamSearch, CachedModel, CountsModel, RolloutValue, TableModel, ZeroValue
from langrl.planning.core import best_index


class TreeModel:
    """A deterministic model from a table {state: {action: (next_state, reward, done)}}; records every step."""

    def __init__(self, table: dict[str, dict[str, tuple[str, float, bool]]]):
        self.table = table
        self.asked: list[tuple[str, str]] = []

    def actions(self, state: str) -> list[str]:
        return list(self.table[state])

    def step(self, state: str, action: str) -> tuple[str, float, bool]:
        self.asked.append((state, action))
        return self.table[state][action]

    def key(self, state: str) -> str:
        return state

    def observation(self, state: str) -> str:
        return state


# L leads to a state whose L pays 1 (done); R pays 0.6 at once (done).
TWO_WAYS = {
    "root": {"L": ("a", 0.0, False), "R": ("r", 0.6, True)},
    "a": {"L": ("aL", 1.0, True), "R": ("aR", 0.0, True)},
}


def two_ways_mcts(simulations: int) -> MCTS:
    return MCTS(CachedModel(TreeModel(TWO_WAYS)), simulations=simulations, c_puct=1.0, value=ZeroValue(),
                gamma=0.5, max_depth=10)


def test_mcts_visit_counts_and_values_by_hand():
    # PUCT score Q + 1.0 * 0.5 * sqrt(max(n, 1)) / (1 + N), unvisited Q = 0, gamma 0.5, leaf value 0.
    # sim 1: a tie (0.5, 0.5) goes to L: new edge to "a", G = 0.           root N = [1, 0]
    # sim 2: L 0.25 < R 0.5: R pays 0.6 and ends, G = 0.6.                root N = [1, 1]
    # sims 3..10 (n = 2..9): L 0.25 sqrt(n) < R 0.6 + 0.5 sqrt(n) / n     root N = [1, 9], W = [0, 5.4]
    decision = two_ways_mcts(10).plan("root", np.random.default_rng(0))
    assert decision.visits == [1, 9]
    assert decision.values == pytest.approx([0.0, 0.6])
    assert decision.action == "R"
    # sim 11 (n = 10): L 0.25 sqrt(10) = 0.791 > R 0.6 + 0.5 sqrt(10) / 10 = 0.758: L, then in "a" a tie
    # goes to L, which pays 1: G = 1 at (a, L), 0 + 0.5 * 1 = 0.5 at (root, L).
    planner = two_ways_mcts(11)
    decision = planner.plan("root", np.random.default_rng(0))
    assert decision.visits == [2, 9]
    assert decision.values == pytest.approx([0.25, 0.6])
    assert decision.action == "R"  # the most visited, although its mean is lower than L's optimum 0.5
    a = planner.root.children[0]
    assert a is not None and a.visits.tolist() == [1, 0] and a.value_sum.tolist() == [1.0, 0.0]
    assert decision.depth == 2 and decision.extra["simulations"] == 11


def test_mcts_world_model_calls_are_counted_and_cached():
    planner = two_ways_mcts(11)
    decision = planner.plan("root", np.random.default_rng(0))
    # three edges were created (root L, root R, a L): one model call each; revisits use the tree
    assert (decision.queries, decision.calls) == (3, 3)
    again = planner.plan("root", np.random.default_rng(0))  # the cache answers the same queries
    assert (again.queries, again.calls) == (3, 0)
    assert again.visits == decision.visits


def test_mcts_prefers_what_the_prior_says_first():
    class Prefer:
        def __call__(self, model, state, actions):
            return np.array([0.1, 0.9])

    planner = MCTS(CachedModel(TreeModel(TWO_WAYS)), simulations=1, prior=Prefer(), value=ZeroValue())
    assert planner.plan("root", np.random.default_rng(0)).visits == [0, 1]


def chain(length: int, reward_at: int) -> TreeModel:
    """States 0..length on a line; 'f' moves forward, 's' stays; reaching ``reward_at`` pays 1 and ends."""
    table = {}
    for s in range(length):
        nxt = s + 1
        table[str(s)] = {"f": (str(nxt), 1.0 if nxt == reward_at else 0.0, nxt == reward_at or nxt == length),
                         "s": (str(s), 0.0, False)}
    return TreeModel(table)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mcts_never_imagines_beyond_its_depth(depth):
    model = chain(10, 9)
    decision = MCTS(CachedModel(model), simulations=200, value=ZeroValue(), max_depth=depth).plan(
        "0", np.random.default_rng(0))
    assert decision.depth == depth
    assert max(int(s) for s, _ in model.asked) == depth - 1  # no state deeper than the limit was stepped


def test_mcts_finds_a_reward_within_reach_and_not_beyond():
    near = MCTS(CachedModel(chain(10, 3)), simulations=200, value=ZeroValue(), max_depth=3)
    decision = near.plan("0", np.random.default_rng(0))
    # Q is the mean return over the visits, those before the reward was found included
    assert decision.action == "f" and decision.values[0] > 0.9 and decision.values[1] < decision.values[0]
    far = MCTS(CachedModel(chain(10, 4)), simulations=200, value=ZeroValue(), max_depth=3)
    assert far.plan("0", np.random.default_rng(0)).values == [0.0, 0.0]


@pytest.mark.parametrize("budget", [1, 5, 17])
def test_planners_respect_the_budget(budget):
    for planner in (MCTS(CachedModel(chain(30, 29)), simulations=1000, max_calls=budget, rollout_depth=10),
                    BeamSearch(CachedModel(chain(30, 29)), width=4, depth=20, max_calls=budget),
                    BFS(CachedModel(chain(30, 29)), depth=20, max_calls=budget)):
        decision = planner.plan("0", np.random.default_rng(0))
        assert 0 < decision.queries <= budget, type(planner).__name__


def test_mcts_is_deterministic_given_the_seed():
    env_table = frozen_lake_like()
    runs = []
    for _ in range(2):
        planner = MCTS(CachedModel(TableModel(env_table, seed=3)), simulations=60, rollout_depth=8, gamma=0.9)
        runs.append([planner.plan(s, np.random.default_rng(7)) for s in range(4)])
    assert [(d.action, d.visits, d.values) for d in runs[0]] == [(d.action, d.visits, d.values) for d in runs[1]]


def frozen_lake_like() -> dict[int, dict[int, list[tuple[float, int, float, bool]]]]:
    """A 2x2 slippery grid: state 3 pays 1 and ends; each action moves as meant with p 0.8, else stays."""
    moves = {0: {0: 0, 1: 1, 2: 2}, 1: {0: 0, 1: 1, 2: 3}, 2: {0: 0, 1: 3, 2: 2}, 3: {0: 3, 1: 3, 2: 3}}
    return {s: {a: [(0.8, t, float(t == 3), t == 3), (0.2, s, 0.0, s == 3)] for a, t in row.items()}
            for s, row in moves.items()}


# A trap for greedy search: "x" pays 0.5 at once and then nothing; "y" pays 0 then 1.
TRAP = {
    "root": {"x": ("X", 0.5, False), "y": ("Y", 0.0, False)},
    "X": {"x": ("XX", 0.0, True), "y": ("XY", 0.0, True)},
    "Y": {"x": ("YX", 1.0, True), "y": ("YY", 0.0, True)},
}


def test_beam_width_one_is_greedy_and_width_two_is_not():
    greedy = BeamSearch(CachedModel(TreeModel(TRAP)), width=1, depth=2).plan("root", np.random.default_rng(0))
    wide = BeamSearch(CachedModel(TreeModel(TRAP)), width=2, depth=2).plan("root", np.random.default_rng(0))
    assert greedy.action == "x" and greedy.values[0] == pytest.approx(0.5)
    assert wide.action == "y" and wide.values == pytest.approx([0.5, 1.0])


def test_beam_prior_weight_breaks_ties_toward_the_prior():
    class Prefer:
        calls = 0

        def __call__(self, model, state, actions):
            return np.array([0.2, 0.8])

    flat = {"root": {"x": ("X", 0.0, True), "y": ("Y", 0.0, True)}}
    beam = BeamSearch(CachedModel(TreeModel(flat)), width=2, depth=1, prior=Prefer(), prior_weight=1.0)
    decision = beam.plan("root", np.random.default_rng(0))
    assert decision.action == "y" and decision.values == pytest.approx([np.log(0.2), np.log(0.8)])


def test_bfs_finds_the_shortest_rewarded_plan_and_skips_repeats():
    model = chain(10, 4)
    decision = BFS(CachedModel(model), depth=10).plan("0", np.random.default_rng(0))
    assert decision.action == "f" and decision.depth == 4
    # 's' loops back to a seen state and is never expanded: 2 queries per state 0..3
    assert decision.queries == 8 and len(set(model.asked)) == 8
    too_short = BFS(CachedModel(chain(10, 4)), depth=3).plan("0", np.random.default_rng(0))
    assert np.isnan(too_short.values).all() or max(np.nan_to_num(too_short.values)) == 0.0


def test_rollout_value_by_hand():
    # forward only pays at the end of a 3-chain: from "0" a rollout that always takes 'f' returns gamma^2
    model = CachedModel(TreeModel({"0": {"f": ("1", 0.0, False)}, "1": {"f": ("2", 0.0, False)},
                                   "2": {"f": ("3", 1.0, True)}}))
    assert RolloutValue(depth=10, gamma=0.5)(model, "0", np.random.default_rng(0)) == pytest.approx(0.25)
    assert RolloutValue(depth=2, gamma=0.5)(model, "0", np.random.default_rng(0)) == 0.0


def test_counts_model_learns_means_and_frequencies():
    m = CountsModel(3, 2)
    for reward, nxt in ((1.0, 1), (0.0, 1), (2.0, 2)):
        m.observe(0, 1, reward, nxt, done=False)
    assert m.known(0, "1") and not m.known(0, "0")
    assert m.step(0, "0") == (0, 0.0, True)  # unknown: ends with nothing
    tab = m.tabular()
    assert tab.R[0, 1].item() == pytest.approx(1.0)
    assert sorted(zip(tab.next_state.tolist(), tab.prob.tolist(), strict=True)) == [
        (1, pytest.approx(2 / 3)), (2, pytest.approx(1 / 3))]
    draws = [m.step(0, "1")[0] for _ in range(600)]
    assert abs(draws.count(1) / 600 - 2 / 3) < 0.07
    nxt, rewards, dones = m.step_many(np.array([0, 0]), np.array([0, 1]))
    assert rewards.tolist() == pytest.approx([0.0, 1.0]) and dones[0] and nxt[1] in (1, 2)


def test_best_index_breaks_ties():
    assert best_index([1, 3, 3]) == 1
    assert best_index([1, 3, 3], [0.0, 0.1, 0.2]) == 2
