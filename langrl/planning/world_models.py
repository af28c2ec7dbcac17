"""World models a planner imagines with: ``step(state, action) -> (next_state, reward, done)``.

A planner needs four things of a model, :class:`PlanningModel`: the admissible action strings of a state,
the step, a hashable ``key`` of a state (for caches and duplicate detection) and the state's text (what an
LM prior reads). The state type is the model's own: a minigrid snapshot, a table index, or a text (an LM
world model, `langrl.protocols.WorldModel`, fits through :class:`TextWorldModel`).

- :class:`MinigridModel` is *exact*: it copies a real BabyAI/minigrid environment's state and steps
  minigrid's own code on the copy, so planners can be tested apart from model errors.
- :class:`TableModel` is exact for environments that publish their transition table
  (``env.unwrapped.P``: the toy token MDP, FrozenLake, Taxi, ...).
- :class:`CountsModel` is *learned*: a table of counts of observed transitions and mean rewards
  (`langrl.planning.dyna` plans with it).
- :class:`CachedModel` wraps any model with an LRU cache of (state key, action) queries and counts the
  queries and the calls that reached the model.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch

from langrl.agents.cache import LRUCache
from langrl.agents.tabular import TabularModel
from langrl.protocols import WorldModel

Step = tuple[Any, float, bool]


@runtime_checkable
class PlanningModel(Protocol):
    """What a planner needs of a world model; ``state`` is of the model's own type."""

    def actions(self, state: Any) -> Sequence[str]: ...

    def step(self, state: Any, action: str) -> tuple[Any, float, bool]: ...

    def key(self, state: Any) -> Hashable: ...

    def observation(self, state: Any) -> str: ...


class CachedModel:
    """A model behind an LRU cache of ``(key(state), action) -> (next_state, reward, done)``.

    ``queries`` counts every ``step``; ``calls`` those that reached the model (cache misses). A cached
    answer is only right for a deterministic model: a stochastic one (a :class:`CountsModel` with several
    outcomes) would always give its first draw, so :func:`cached` leaves stochastic models unwrapped.
    """

    def __init__(self, model: PlanningModel, size: int = 100_000):
        self.model = model
        self.cache: LRUCache[tuple[Hashable, str], Step] = LRUCache(size)
        self.queries = 0
        self.calls = 0

    def actions(self, state: Any) -> Sequence[str]:
        return self.model.actions(state)

    def step(self, state: Any, action: str) -> tuple[Any, float, bool]:
        self.queries += 1
        key = (self.model.key(state), action)
        hit = self.cache.get(key)
        if hit is None:
            self.calls += 1
            hit = self.model.step(state, action)
            self.cache.put(key, hit)
        return hit

    def key(self, state: Any) -> Hashable:
        return self.model.key(state)

    def observation(self, state: Any) -> str:
        return self.model.observation(state)


def cached(model: PlanningModel, size: int) -> CachedModel:
    """``model`` behind a :class:`CachedModel` (size 0: counting only); a stochastic model is counted but
    never served from the cache."""
    return CachedModel(model, size if getattr(model, "deterministic", True) else 0)


class TextWorldModel:
    """A text world model (`langrl.protocols.WorldModel`: text states, e.g. an LM imagining the next
    observation) over a fixed list of action strings."""

    def __init__(self, model: WorldModel, actions: Sequence[str]):
        self.model = model
        self.action_list = list(actions)

    def actions(self, state: str) -> Sequence[str]:
        return self.action_list

    def step(self, state: str, action: str) -> tuple[str, float, bool]:
        return self.model.step(state, action)

    def key(self, state: str) -> Hashable:
        return state

    def observation(self, state: str) -> str:
        return state


# ---------------------------------------------------------------------------------------------- tables

class TableModel:
    """The exact model of an environment with a transition table ``P[s][a] = [(p, s', r, done), ...]``
    (Gymnasium's toy-text environments, `langrl.envs.token_mdp.TokenTreeEnv`). States are the table's
    integers; a stochastic outcome is drawn from ``rng``. ``names`` are the action strings (default
    ``"0"``, ``"1"``, ...)."""

    def __init__(self, table: dict[int, dict[int, list[tuple[float, int, float, bool]]]],
                 names: Sequence[str] | None = None, seed: int = 0):
        self.table = table
        n_actions = len(table[next(iter(table))])
        self.names = list(names) if names is not None else [str(a) for a in range(n_actions)]
        if len(self.names) != n_actions:
            raise ValueError(f"{len(self.names)} action names for {n_actions} actions")
        self.index = {name: a for a, name in enumerate(self.names)}
        self.deterministic = all(len(out) == 1 for row in table.values() for out in row.values())
        self.rng = np.random.default_rng(seed)

    @classmethod
    def of(cls, env: gym.Env, names: Sequence[str] | None = None, seed: int = 0) -> TableModel:
        """The model of ``env`` from ``env.unwrapped.P``."""
        table = getattr(env.unwrapped, "P", None)
        if not isinstance(table, dict):
            raise ValueError(f"{env!r} has no transition table P; the exact table model needs one")
        return cls(table, names, seed)

    def actions(self, state: int) -> Sequence[str]:
        return self.names

    def step(self, state: int, action: str) -> tuple[int, float, bool]:
        outcomes = self.table[int(state)][self.index[action]]
        k = 0 if len(outcomes) == 1 else int(self.rng.choice(len(outcomes), p=[o[0] for o in outcomes]))
        _, nxt, reward, done = outcomes[k]
        return int(nxt), float(reward), bool(done)

    def key(self, state: int) -> Hashable:
        return int(state)

    def observation(self, state: int) -> str:
        return str(state)


class CountsModel:
    """A learned tabular model: counts ``n(s, a, s', done)`` of observed transitions and the mean reward of
    each observed (s, a) (Sutton & Barto 2018, sec. 8.2). ``step`` draws s' from the empirical
    distribution; a pair never observed ends the imagined episode with reward 0 (``known`` tells them
    apart), so a planner with this model treats the unexplored as worthless."""

    def __init__(self, n_states: int, n_actions: int, names: Sequence[str] | None = None, seed: int = 0):
        self.n_states, self.n_actions = n_states, n_actions
        self.names = list(names) if names is not None else [str(a) for a in range(n_actions)]
        self.index = {name: a for a, name in enumerate(self.names)}
        self.reward_sum = np.zeros((n_states, n_actions))
        self.visits = np.zeros((n_states, n_actions), dtype=np.int64)
        self.outcomes: dict[tuple[int, int], dict[tuple[int, bool], int]] = {}
        self.last_next = np.zeros((n_states, n_actions), dtype=np.int64)  # the one outcome of a pair that has one
        self.last_done = np.ones((n_states, n_actions), dtype=bool)
        self.branching = np.zeros((n_states, n_actions), dtype=bool)  # pairs seen with more than one outcome
        self.rng = np.random.default_rng(seed)

    @property
    def deterministic(self) -> bool:
        """Whether every observed pair has had one outcome only (then a cache is safe)."""
        return all(len(out) == 1 for out in self.outcomes.values())

    def observe(self, state: int, action: int, reward: float, next_state: int, done: bool) -> None:
        """Count one real transition."""
        s, a = int(state), int(action)
        self.visits[s, a] += 1
        self.reward_sum[s, a] += float(reward)
        row = self.outcomes.setdefault((s, a), {})
        row[(int(next_state), bool(done))] = row.get((int(next_state), bool(done)), 0) + 1
        self.last_next[s, a], self.last_done[s, a] = int(next_state), bool(done)
        self.branching[s, a] = len(row) > 1

    def known(self, state: int, action: str | int) -> bool:
        a = self.index[action] if isinstance(action, str) else int(action)
        return bool(self.visits[int(state), a] > 0)

    def actions(self, state: int) -> Sequence[str]:
        return self.names

    def step(self, state: int, action: str) -> tuple[int, float, bool]:
        s, a = int(state), self.index[action]
        row = self.outcomes.get((s, a))
        if not row:
            return s, 0.0, True
        keys = list(row)
        counts = np.array([row[k] for k in keys], dtype=np.float64)
        k = 0 if len(keys) == 1 else int(self.rng.choice(len(keys), p=counts / counts.sum()))
        nxt, done = keys[k]
        return nxt, float(self.reward_sum[s, a] / self.visits[s, a]), done

    def step_many(self, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``step`` of N (state, action index) pairs at once -> next states, rewards, dones (N,): one array
        lookup where a pair has had one outcome, a draw where it has had several."""
        rewards = np.where(self.visits[states, actions] > 0,
                           self.reward_sum[states, actions] / np.maximum(self.visits[states, actions], 1), 0.0)
        nxt, done = self.last_next[states, actions].copy(), self.last_done[states, actions].copy()
        nxt = np.where(self.visits[states, actions] > 0, nxt, states)
        for i in np.flatnonzero(self.branching[states, actions]):
            nxt[i], _, done[i] = self.step(int(states[i]), self.names[int(actions[i])])
        return nxt, rewards, done

    def key(self, state: int) -> Hashable:
        return int(state)

    def observation(self, state: int) -> str:
        return str(state)

    def tabular(self) -> TabularModel:
        """The certainty-equivalent model as `langrl.agents.tabular.TabularModel`: mean rewards R (S, A)
        and the empirical probabilities of continuing transitions (unobserved pairs: R = 0, terminal)."""
        R = torch.zeros(self.n_states, self.n_actions, dtype=torch.float64)
        seen = self.visits > 0
        R[torch.from_numpy(seen)] = torch.from_numpy(self.reward_sum[seen] / self.visits[seen])
        sa, nxt, prob = [], [], []
        for (s, a), row in self.outcomes.items():
            total = self.visits[s, a]
            for (s2, done), n in row.items():
                if not done:
                    sa.append(s * self.n_actions + a)
                    nxt.append(s2)
                    prob.append(n / total)
        return TabularModel(R, torch.tensor(sa, dtype=torch.long), torch.tensor(nxt, dtype=torch.long),
                            torch.tensor(prob, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- minigrid

MINIGRID_LEFT, MINIGRID_RIGHT, MINIGRID_FORWARD = 0, 1, 2
STATIC_OBJECTS = frozenset({"wall", "floor", "goal", "lava"})  # no minigrid action changes or moves these


@dataclass
class MinigridWorld:
    """The parts of a minigrid environment that actions can change besides the agent's pose: the grid,
    the carried object and the instruction verifier; with the episode's mission, step limit and rooms. A world
    is shared by every state that has not changed it, and never changed once shared (copy on write)."""

    grid: Any
    carrying: Any
    instrs: Any
    mission: str
    max_steps: int
    rooms: Any  # a BabyAI level's room layout (the verifier asks which room a position is in); never changed
    version: int
    fingerprint: Hashable = None  # what tells worlds apart (see MinigridModel.key); computed on first use


@dataclass(frozen=True)
class MinigridState:
    """A snapshot of a minigrid environment: the agent's pose and step count, and its world."""

    agent_pos: tuple[int, int]
    agent_dir: int
    step_count: int
    world: MinigridWorld


class MinigridModel:
    """The exact model of a BabyAI/minigrid level: :meth:`snapshot` copies a real environment's state and
    :meth:`step` runs minigrid's own ``step`` on one working copy of the environment restored to the state.

    Why not ``copy.deepcopy(env)`` per step: it costs milliseconds (the grid is ~100 Python objects),
    ten times a step. Instead a state shares its :class:`MinigridWorld` with its parent, and the world is
    deep-copied only before an action that may change it. Minigrid's turns and ``forward`` change only the
    agent's pose and step count; ``pick up`` / ``toggle`` act on the cell ahead and ``drop`` on the carried
    object, so with an empty (or wall) cell ahead and nothing carried they change nothing either. The
    verifiers of single instructions (``go to``, ``pick up``, ``put next``, ``open``) only write
    ``preCarrying = carrying``, which those actions keep; sequences of instructions (``before``, ``and``)
    keep progress flags, so their worlds are copied at every step. tests/smoke/test_planning.py checks this
    against deep copies of the real environment on two levels. The working copy skips ``gen_obs``
    (the partial view, about half of a step's time); :meth:`observation` computes it on demand.
    """

    deterministic = True

    def __init__(self, env: gym.Env, actions: Sequence[str]):
        self.names = list(actions)
        self.index = {name: a for a, name in enumerate(self.names)}
        self.work = copy.deepcopy(minigrid_env(env))
        self.work.render_mode = None
        self.work.gen_obs = lambda: None  # the step's observation is not needed; observation() makes it
        self.versions = itertools.count()
        from minigrid.envs.babyai.core.verifier import ActionInstr  # imported here: minigrid is optional

        self.single_instruction = ActionInstr

    def snapshot(self, env: gym.Env) -> MinigridState:
        """The state of a real environment (a copy: later steps of either do not reach the other)."""
        real = minigrid_env(env)
        world = MinigridWorld(real.grid, real.carrying, real.instrs, real.mission, real.max_steps,
                              getattr(real, "room_grid", None), -1)
        world = self.copy_world(world, {id(real): self.work})
        return MinigridState(pose(real.agent_pos), int(real.agent_dir), int(real.step_count), world)

    def actions(self, state: MinigridState) -> Sequence[str]:
        return self.names

    def copy_world(self, world: MinigridWorld, memo: dict[int, Any]) -> MinigridWorld:
        """A deep copy of ``world`` in which the objects no action changes (:data:`STATIC_OBJECTS`) are
        shared; ``memo`` maps the verifier's environment to the working copy. One ``deepcopy`` memo for
        the grid, the carried object and the verifier keeps their shared objects shared (the verifier
        holds the very objects of the grid it must find)."""
        grid = copy.copy(world.grid)
        grid.grid = [cell if cell is None or cell.type in STATIC_OBJECTS else copy.deepcopy(cell, memo)
                     for cell in world.grid.grid]
        carrying, instrs = copy.deepcopy(world.carrying, memo), copy.deepcopy(world.instrs, memo)
        return MinigridWorld(grid, carrying, instrs, world.mission, world.max_steps, world.rooms,
                             next(self.versions))

    def restore(self, state: MinigridState, world: MinigridWorld) -> None:
        w = self.work
        w.agent_pos, w.agent_dir, w.step_count = state.agent_pos, state.agent_dir, state.step_count
        w.grid, w.carrying, w.instrs = world.grid, world.carrying, world.instrs
        w.mission, w.max_steps = world.mission, world.max_steps
        if world.rooms is not None:
            w.room_grid = world.rooms

    def may_change_world(self, state: MinigridState, action: int) -> bool:
        """Whether ``action`` in ``state`` may change the world (then it acts on a copy)."""
        if not isinstance(state.world.instrs, self.single_instruction):
            return True
        if action in (MINIGRID_LEFT, MINIGRID_RIGHT, MINIGRID_FORWARD):
            return False
        dx, dy = ((1, 0), (0, 1), (-1, 0), (0, -1))[state.agent_dir]
        ahead = state.world.grid.get(state.agent_pos[0] + dx, state.agent_pos[1] + dy)
        return state.world.carrying is not None or (ahead is not None and ahead.type != "wall")

    def step(self, state: MinigridState, action: str) -> tuple[MinigridState, float, bool]:
        a = self.index[action]
        world = state.world
        if self.may_change_world(state, a):
            world = self.copy_world(world, {id(self.work): self.work})
        self.restore(state, world)
        _, reward, terminated, truncated, _ = self.work.step(a)
        w = self.work
        world.carrying = w.carrying  # the verifier and the grid are changed in place; the carried object not
        nxt = MinigridState(pose(w.agent_pos), int(w.agent_dir), int(w.step_count), world)
        return nxt, float(reward), bool(terminated or truncated)

    def key(self, state: MinigridState) -> Hashable:
        """The agent's pose, step count and the world's content: the grid's encoding, what is carried and
        where the verifier's objects are. Two worlds reached by different paths (an object picked up and
        put back) share a key; a sequence of instructions also keeps progress flags, so there each world
        is its own."""
        world = state.world
        if world.fingerprint is None:
            if isinstance(world.instrs, self.single_instruction):
                carried = None if world.carrying is None else world.carrying.encode()
                # where the verifier looks for its objects (two look-alike objects may differ in being tracked)
                tracked = tuple(tuple(map(tuple, getattr(world.instrs, d).obj_poss))
                                for d in ("desc", "desc_move", "desc_fixed") if hasattr(world.instrs, d))
                world.fingerprint = (world.grid.encode().tobytes(), carried, tracked)
            else:
                world.fingerprint = world.version
        return (state.agent_pos, state.agent_dir, state.step_count, world.fingerprint)

    def observation(self, state: MinigridState) -> str:
        """The text observation of the real environment in ``state`` (`langrl.envs.text.describe_view`)."""
        from langrl.envs.text.describe import describe_view

        self.restore(state, state.world)
        obs = type(self.work).gen_obs(self.work)
        return describe_view(obs["image"], obs["mission"])


def minigrid_env(env: gym.Env) -> Any:
    """The minigrid environment inside a langrl BabyAI text environment (or a minigrid env itself)."""
    inner = getattr(env.unwrapped, "inner", None)
    base = inner.unwrapped if inner is not None else env.unwrapped
    if not hasattr(base, "grid") or not hasattr(base, "agent_pos"):
        raise ValueError(f"{env!r} is not a minigrid environment; the exact minigrid model needs one")
    return base


def pose(position: Any) -> tuple[int, int]:
    return int(position[0]), int(position[1])


__all__ = ["CachedModel", "CountsModel", "MinigridModel", "MinigridState", "MinigridWorld", "PlanningModel",
           "TableModel", "TextWorldModel", "cached"]
