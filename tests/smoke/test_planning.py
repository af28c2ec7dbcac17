"""Tier 2: the exact minigrid world model against the real environment, planners on BabyAI, the LM prior
with a tiny model, the ``kind: plan`` config, evaluation and a Dyna run through the harness (resume equals
uninterrupted)."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest

import langrl
import langrl.envs.text  # noqa: F401  (registers the environments)
from langrl.config import load_any_config
from langrl.envs.text import BABYAI_ACTIONS
from langrl.errors import ConfigError
from langrl.planning import BFS, MCTS, LMPrior, MinigridModel, cached
from langrl.planning.world_models import minigrid_env
from langrl.run.io import read_jsonl

pytest.importorskip("minigrid")


def same_as_replay(env: gym.Env, path: list[int], model: MinigridModel, state, reward: float, done: bool) -> bool:
    """Whether ``state`` is what a deep copy of the real environment reaches by replaying ``path``."""
    ref = copy.deepcopy(env)
    for a in path:
        obs, r, terminated, truncated, _ = ref.step(a)
    real = minigrid_env(ref)
    return (obs == model.observation(state) and r == reward and (terminated or truncated) == done
            and state.agent_pos == tuple(int(x) for x in real.agent_pos) and state.agent_dir == real.agent_dir
            and bool((state.world.grid.encode() == real.grid.encode()).all())
            and (state.world.carrying is None) == (real.carrying is None))


@pytest.mark.parametrize("level, seed", [("PickupLoc", 3), ("PutNextLocal", 1)])
def test_the_exact_model_steps_as_the_real_environment(level, seed):
    env = gym.make(f"langrl/BabyAI-{level}-Text-v0")
    env.reset(seed=seed)
    model = MinigridModel(env, BABYAI_ACTIONS)
    through_cache = cached(model, 1000)  # answers by content key: they must be right too
    states = [(model.snapshot(env), [])]
    rng = np.random.default_rng(0)
    copies = 0
    for _ in range(80):  # random branching queries: old states are stepped again after newer ones changed
        state, path = states[int(rng.integers(len(states)))]
        a = int(rng.integers(len(BABYAI_ACTIONS)))
        nxt, reward, done = through_cache.step(state, BABYAI_ACTIONS[a])
        assert same_as_replay(env, path + [a], model, nxt, reward, done), (level, path + [a])
        copies += nxt.world is not state.world
        if not done:
            states.append((nxt, path + [a]))
    assert copies > 0, "no action changed the world: the copy-on-write path went untested"
    assert through_cache.calls < through_cache.queries  # some answers came from the cache


def test_a_snapshot_is_independent_of_the_real_environment():
    env = gym.make("langrl/BabyAI-GoToLocal-Text-v0")
    obs, _ = env.reset(seed=1)
    model = MinigridModel(env, BABYAI_ACTIONS)
    snap = model.snapshot(env)
    for a in (0, 2, 3, 2):
        env.step(a)
    assert model.observation(snap) == obs and snap.step_count == 0


def test_mcts_with_the_exact_model_solves_goto_and_is_deterministic():
    env = gym.make("langrl/BabyAI-GoToLocal-Text-v0")
    base = MinigridModel(env, BABYAI_ACTIONS)
    runs = []
    for _ in range(2):
        env.reset(seed=1000000)
        planner = MCTS(cached(base, 10_000), simulations=40, gamma=0.99, max_depth=20, rollout_depth=15)
        rng, actions, reward = np.random.default_rng(0), [], 0.0
        for _ in range(20):
            decision = planner.plan(base.snapshot(env), rng)
            actions.append(decision.action)
            _, reward, terminated, truncated, _ = env.step(BABYAI_ACTIONS.index(decision.action))
            if terminated or truncated:
                break
        runs.append((actions, reward))
    assert runs[0] == runs[1]
    assert runs[0][1] > 0, runs[0]


def test_bfs_with_the_exact_model_finds_the_goal():
    env = gym.make("langrl/BabyAI-GoToLocal-Text-v0")
    env.reset(seed=1000001)
    base = MinigridModel(env, BABYAI_ACTIONS)
    decision = BFS(cached(base, 10_000), depth=12).plan(base.snapshot(env), np.random.default_rng(0))
    assert max(np.nan_to_num(decision.values)) > 0.5 and decision.calls == decision.queries


def test_the_lm_prior_guides_mcts(tiny):
    from langrl.agents.prior import LMActionPrior

    env = gym.make("langrl/BabyAI-GoToLocal-Text-v0")
    env.reset(seed=0)
    base = MinigridModel(env, BABYAI_ACTIONS)
    prior = LMPrior(LMActionPrior(tiny, BABYAI_ACTIONS, chat=False))
    root = base.snapshot(env)
    p = prior(cached(base, 0), root, BABYAI_ACTIONS)
    assert p.shape == (6,) and p.sum() == pytest.approx(1.0) and (p > 0).all()
    decision = MCTS(cached(base, 1000), simulations=8, prior=prior, rollout_depth=5).plan(
        root, np.random.default_rng(0))
    assert decision.prior_calls >= 1 and sum(decision.visits) == 8


def plan_config(**extra):
    config = {"kind": "plan", "planner": {"simulations": 30, "max_depth": 15, "rollout_depth": 10},
              "eval": {"episodes": 1}}
    config.update(extra)
    return config


def test_the_plan_config_validates_and_explains():
    cfg = load_any_config("configs/babyai_plan.yaml")
    assert cfg.kind == "plan" and cfg.planner.type == "mcts" and cfg.model == "uniform"
    assert load_any_config("configs/dyna_toy.yaml").algorithm == "dyna"
    with pytest.raises(ConfigError, match="dyna needs model"):
        load_any_config({"kind": "plan", "algorithm": "dyna"})
    with pytest.raises(ConfigError, match="planner.simulations"):
        load_any_config(plan_config(), ["planner.simulations=0"])
    with pytest.raises(ConfigError, match="nothing to train"):
        langrl.train(plan_config())


def test_evaluate_a_planner_on_held_out_seeds():
    result = langrl.evaluate(plan_config(), "uniform", episodes=1)
    assert result["episodes"] == 1 and result["decisions"] >= 1
    assert 0 < result["calls_per_decision"] <= result["queries_per_decision"]
    assert result["seconds_per_decision"] > 0 and result["seeds"] == [1000000, 1000000]
    beam = langrl.evaluate(plan_config(planner={"type": "beam", "width": 4, "max_depth": 6, "value": "zero"}),
                           "uniform", episodes=1)
    assert beam["planner"] == "beam" and beam["decisions"] >= 1


def test_plan_with_a_table_model_on_frozen_lake():
    config = {"kind": "plan", "env": {"id": "FrozenLake-v1", "kwargs": {"is_slippery": False}},
              "planner": {"type": "bfs", "max_depth": 10}, "eval": {"episodes": 2}}
    exact = langrl.evaluate(config, "uniform")
    learned = langrl.evaluate({**config, "world_model": {"type": "tabular", "explore_episodes": 300}}, "uniform")
    assert exact["success_rate"] == 1.0 and exact["mean_length"] == 6  # the shortest path on the 4x4 map
    assert learned["success_rate"] == 1.0


DYNA = ["task.length=2", "dyna.episodes=8", "log.progress=false", "log.checkpoint_every=2"]


def test_dyna_trains_through_the_harness_and_resumes_as_uninterrupted(tmp_path):
    straight = langrl.train("configs/dyna_toy.yaml", output=tmp_path / "a", overrides=[*DYNA, "steps=3"])
    rows = read_jsonl(straight.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["env/episodes"] == 24 and rows[-1]["env/steps"] == 48 and rows[-1]["dyna/imagined"] > 0
    assert rows[-1]["exact/kl_to_optimum"] < rows[0]["exact/kl_to_optimum"]
    langrl.train("configs/dyna_toy.yaml", output=tmp_path / "b", overrides=[*DYNA, "steps=2"])
    resumed = langrl.train("configs/dyna_toy.yaml", output=tmp_path / "b", resume=True, overrides=[*DYNA, "steps=3"])
    again = read_jsonl(resumed.run_dir / "metrics.jsonl")
    assert again[-1]["exact/kl_to_optimum"] == rows[-1]["exact/kl_to_optimum"]
    result = langrl.evaluate("configs/dyna_toy.yaml", str(tmp_path / "a"), overrides=DYNA)
    assert result["exact/kl_to_optimum"] == pytest.approx(rows[-1]["exact/kl_to_optimum"])
    assert "first below" in "\n".join(straight.summary["headline"])
