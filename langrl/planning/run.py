"""The ``kind: plan`` run (`langrl.config.plan.PlanConfig`).

- ``algorithm: search``: `evaluate_kind` plays one episode per held-out seed in which the planner chooses
  every action: at each real step it takes the real state (the exact model copies the environment, a table
  model reads the observation, an LM world model starts from the observation's text), imagines with the world
  model, acts in the real environment. It reports success rate, mean return, world-model calls and wall time
  per decision. `train_plan` refuses: a search agent has nothing to train.
- ``algorithm: dyna``: `train_plan` trains `langrl.planning.dyna.SoftDyna` through the run harness
  (metrics.jsonl with ``env/steps`` and ``exact/kl_to_optimum`` each step, checkpoints, resume);
  `evaluate_kind` reports the exact comparison with pi* of a run's newest checkpoint.

Random streams: every episode's decisions draw from a generator seeded by (run seed, episode seed), and
every Dyna step from one seeded by (run seed, step), so results do not depend on the order episodes run in,
and a resumed run continues as the uninterrupted one does.
"""

from __future__ import annotations

import functools
import json
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from langrl.config.base import read_config_data
from langrl.config.plan import UNIFORM, PlanConfig, plan_config_from_data
from langrl.envs.text.core import make_env, quiet_reset
from langrl.errors import ConfigError
from langrl.planning.core import LMPrior, PlanDecision, Planner, RolloutValue, StatePrior, UniformPrior, ZeroValue
from langrl.planning.lm_world_model import LMWorldModel
from langrl.planning.mcts import MCTS
from langrl.planning.search import BFS, BeamSearch
from langrl.planning.world_models import (
    CachedModel,
    CountsModel,
    MinigridModel,
    TableModel,
    TextWorldModel,
    cached,
)
from langrl.rollout.episodes import Episode, summarise_episodes
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import list_checkpoints, load_objects
from langrl.run.harness import Checkpointed, RunHarness, TrainResult, resolve_run_dir, run_name
from langrl.run.io import atomic_write_text, read_jsonl

KL_TARGET = 0.05  # the threshold the report counts real episodes to (tests/learning/test_dyna_toy.py)


def stream_seed(seed: int, stream: str, *keys: int) -> int:
    """A 63-bit seed for the planning stream ``stream`` of run ``seed`` at ``keys`` (a SeedSequence hash,
    as `langrl.run.seeds.derive_seed`, with the stream named by its CRC-32)."""
    entropy = [seed & (2**64 - 1), zlib.crc32(stream.encode()), *(k & (2**64 - 1) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


# ---------------------------------------------------------------------------------------------- search

RootFn = Callable[[gym.Env, Any], Any]  # (real env, its observation) -> the model's state of it


def action_names(env: gym.Env, info: dict[str, Any]) -> list[str]:
    """``info["actions"]`` of a text environment, else ``"0"``, ``"1"``, ... for a discrete action space."""
    if "actions" in info:
        return list(info["actions"])
    n = getattr(env.action_space, "n", None)
    if n is None:
        raise ConfigError(f"env {env.spec.id if env.spec else env!r}: planners need a discrete action space")
    return [str(a) for a in range(int(n))]


def build_world_model(cfg: PlanConfig, env: gym.Env, actions: Sequence[str]) -> tuple[Any, RootFn]:
    """The world model of ``cfg.world_model`` for ``env``, and how to read the real state into it."""
    wm = cfg.world_model
    if wm.type == "lm":
        return lm_world_model(cfg, actions), lambda real, obs: str(obs)
    if wm.type == "exact":
        if hasattr(env.unwrapped, "inner") or hasattr(env.unwrapped, "grid"):
            minigrid = MinigridModel(env, actions)
            return minigrid, lambda real, obs: minigrid.snapshot(real)
        if isinstance(getattr(env.unwrapped, "P", None), dict):
            return TableModel.of(env, actions, cfg.seed), lambda real, obs: int(obs)
        raise ConfigError(f"world_model.type = exact: env.id = {cfg.env.id!r} is neither a minigrid level nor "
                          f"an environment with a transition table P")
    n_states = getattr(env.observation_space, "n", None)
    if n_states is None:
        raise ConfigError(f"world_model.type = tabular: env.id = {cfg.env.id!r} has no discrete observations")
    counts = CountsModel(int(n_states), len(actions), actions, cfg.seed)
    rng = np.random.default_rng(stream_seed(cfg.seed, "plan_explore"))
    for k in range(wm.explore_episodes):  # uniformly random episodes fill the counts
        obs, _ = quiet_reset(env, wm.explore_seed_start + k)
        done = False
        while not done:
            a = int(rng.integers(len(actions)))
            nxt, reward, terminated, truncated, _ = env.step(a)
            counts.observe(int(obs), a, float(reward), int(nxt), bool(terminated))
            obs, done = nxt, terminated or truncated
    return counts, lambda real, obs: int(obs)


def lm_world_model(cfg: PlanConfig, actions: Sequence[str]) -> TextWorldModel:
    """The LM world model of the run (or checkpoint) ``world_model.path`` over ``actions``: it imagines from
    the real text observation."""
    path = cfg.world_model.path
    if path is None or not Path(path).exists():
        raise ConfigError(f"world_model.path = {path!r}: no such folder; give the folder of a world_model run "
                          f"(langrl train configs/world_model_babyai.yaml) or one of its checkpoints")
    model = LMWorldModel.load(path, device=cfg.device, dtype=cfg.dtype, field="world_model.path")
    return TextWorldModel(model, actions)


def build_prior(cfg: PlanConfig, model_name: str, actions: Sequence[str]) -> StatePrior:
    """Uniform, or the LM ``model_name`` scoring the action strings (`LMActionPrior`)."""
    if model_name == UNIFORM:
        return UniformPrior()
    from langrl.agents.prior import LMActionPrior
    from langrl.models import load_lm

    lm = load_lm(model_name, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    p = cfg.prior
    return LMPrior(LMActionPrior(lm, actions, template=p.template, chat=p.chat, sep=p.sep,
                                 temperature=p.temperature, calibrate=p.calibrate))


def build_planner(cfg: PlanConfig, model: CachedModel, prior: StatePrior) -> Planner:
    """The planner of ``cfg.planner`` on ``model``."""
    p = cfg.planner
    if p.type == "mcts":
        value = ZeroValue() if p.value == "zero" else None  # None: MCTS's own budgeted random rollouts
        return MCTS(model, simulations=p.simulations, c_puct=p.c_puct, prior=prior, value=value, gamma=p.gamma,
                    max_depth=p.max_depth, rollout_depth=p.rollout_depth, max_calls=p.max_calls,
                    unvisited_value=p.unvisited_value)
    if p.type == "beam":
        beam_value = ZeroValue() if p.value == "zero" else RolloutValue(p.rollout_depth, p.gamma)
        return BeamSearch(model, width=p.width, depth=p.max_depth, prior=prior, prior_weight=p.prior_weight,
                          value=beam_value, gamma=p.gamma, max_calls=p.max_calls)
    return BFS(model, depth=p.max_depth, gamma=p.gamma, max_calls=p.max_calls)


def play(planner: Planner, env: gym.Env, root: RootFn, seed: int, rng: np.random.Generator,
         actions: Sequence[str]) -> tuple[Episode, list[PlanDecision]]:
    """One episode from ``seed`` in which ``planner`` chooses every action."""
    obs, _ = quiet_reset(env, seed)
    episode, decisions = Episode(seed=seed), []
    while True:
        decision = planner.plan(root(env, obs), rng)
        decisions.append(decision)
        a = list(actions).index(decision.action)
        episode.observations.append(str(obs))
        nxt, reward, terminated, truncated, _ = env.step(a)
        episode.actions.append(a)
        episode.rewards.append(float(reward))
        if terminated or truncated:
            episode.success = bool(terminated and float(reward) > 0)
            return episode, decisions
        obs = nxt


def evaluate_search(cfg: PlanConfig, model_name: str, episodes: int | None = None) -> dict[str, Any]:
    """Success rate, mean return, and world-model calls and wall time per decision of the planner over
    ``episodes`` (default ``eval.episodes``) held-out seeds."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    n = cfg.eval.episodes if episodes is None else episodes
    env = make_env(cfg.env.id, cfg.env.kwargs, cfg.env.max_episode_steps)
    _, info = quiet_reset(env, cfg.eval.seed_start)
    actions = action_names(env, info)
    base, root = build_world_model(cfg, env, actions)
    prior = build_prior(cfg, model_name, actions)
    played, decisions = [], []
    t0 = time.perf_counter()
    for seed in range(cfg.eval.seed_start, cfg.eval.seed_start + n):
        # a fresh cache per episode: an episode's cost does not depend on the episodes before it
        planner = build_planner(cfg, cached(base, cfg.world_model.cache_size), prior)
        episode, made = play(planner, env, root, seed, np.random.default_rng(stream_seed(cfg.seed, "plan", seed)),
                             actions)
        played.append(episode)
        decisions += made
    env.close()
    d = max(1, len(decisions))
    return {"model": model_name, "env": cfg.env.id, "planner": cfg.planner.type, "world_model": cfg.world_model.type,
            **summarise_episodes(played), "decisions": len(decisions),
            "calls_per_decision": sum(x.calls for x in decisions) / d,
            "queries_per_decision": sum(x.queries for x in decisions) / d,
            "prior_calls_per_decision": sum(x.prior_calls for x in decisions) / d,
            "seconds_per_decision": sum(x.seconds for x in decisions) / d,
            "max_seconds_per_decision": max((x.seconds for x in decisions), default=0.0),
            "seeds": [cfg.eval.seed_start, cfg.eval.seed_start + n - 1], "time_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- dyna

def build_dyna(cfg: PlanConfig) -> Any:
    """The `SoftDyna` learner of ``cfg`` on its toy task, pi0 the LM ``cfg.model``."""
    from langrl.models import load_lm
    from langrl.planning.dyna import SoftDyna, toy_task
    from langrl.rewards import build_reward, score

    lm = load_lm(cfg.model, dtype="float32", device="cpu", seed=cfg.seed)
    reward = build_reward(cfg.task.reward)
    task = toy_task(lm, cfg.task.prompt, cfg.task.length, functools.partial(score, reward), cfg.task.beta)
    d = cfg.dyna
    return SoftDyna(task, episodes=d.episodes, planning_updates=d.planning_updates, batch_size=d.batch_size,
                    alpha=d.alpha)


def train_plan(config: PlanConfig | dict[str, Any] | str | Path, output: str | Path | None = None,
               resume: bool = False, allow_config_change: bool = False,
               callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a ``kind: plan`` run: Dyna (``algorithm: dyna``); a search agent has nothing to train."""
    cfg = config if isinstance(config, PlanConfig) else plan_config_from_data(*read_config_data(config))
    if cfg.algorithm != "dyna":
        raise ConfigError("algorithm = search: a planner with a given world model has nothing to train; measure "
                          "it with `langrl eval CONFIG --model uniform|LM` (or set algorithm: dyna)")
    run_dir = resolve_run_dir(run_name(config, "plan"), output, resume)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    learner = build_dyna(cfg)
    parts = Checkpointed(model=None, tokenizer=None, optimizer=None, objects={"dyna": learner.state_dict()})
    with RunHarness(run_dir, cfg, cfg.log, parts, allow_config_change, callbacks) as harness:
        state = harness.restore() if resume else {}
        if state:
            learner.load_state_dict(parts.objects["dyna"])
        with harness.session(total=cfg.steps, desc="dyna") as logger:
            if not state:
                harness.log(logger, 0, {"env/steps": 0, "env/episodes": 0, **learner.task.exact(learner.q)})
            last: dict[str, float] = {}
            for step in harness.steps(cfg.steps):
                t0 = time.perf_counter()
                last = learner.step(torch.Generator().manual_seed(stream_seed(cfg.seed, "dyna_step", step)))
                last["time/step_s"] = time.perf_counter() - t0
                harness.log(logger, step, last)
                if harness.due(step, cfg.steps):
                    parts.objects["dyna"] = learner.state_dict()
                    harness.checkpoint(step, {})
                harness.advance(kl=last["exact/kl_to_optimum"])
    write_dyna_report(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summarise_dyna(run_dir))


def summarise_dyna(run_dir: Path) -> dict[str, Any]:
    """The final exact metrics and the real episodes at which KL(pi || pi*) first fell below 0.05."""
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "exact/kl_to_optimum" in r]
    last = rows[-1] if rows else {}
    below = next((r for r in rows if r["exact/kl_to_optimum"] < KL_TARGET), None)
    first = None if below is None else int(below["env/episodes"])
    kl = last.get("exact/kl_to_optimum", float("nan"))
    headline = [f"exact KL(pi || pi*) {kl:.4f} after {int(last.get('env/episodes', 0))} real episodes "
                f"({int(last.get('env/steps', 0))} env steps, {int(last.get('dyna/imagined', 0))} imagined)",
                f"first below {KL_TARGET}: " + (f"after {first} real episodes" if first is not None else "not reached")]
    return {"headline": headline, "kl_final": kl, "episodes_to_target": first, "final": last}


def write_dyna_report(run_dir: Path) -> Path:
    """``report.md`` of a Dyna run, from its metrics.jsonl: the headline and the last step's metrics."""
    summary = summarise_dyna(Path(run_dir))
    lines = ["# Dyna on the toy token MDP", "", *[f"- {h}" for h in summary["headline"]], "", "| metric | value |",
             "| --- | --- |"]
    lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in summary["final"].items()]
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def evaluate_dyna(cfg: PlanConfig, model: str) -> dict[str, Any]:
    """The exact comparison with pi* of the newest checkpoint of the run folder (or checkpoint) ``model``."""
    path = Path(model)
    checkpoints = list_checkpoints(path) if path.is_dir() else []
    checkpoint = checkpoints[-1] if checkpoints else path
    if not (checkpoint / "dyna.pkl").is_file():
        raise ConfigError(f"--model {model!r}: not a Dyna run folder or checkpoint (no dyna.pkl); train one with "
                          f"`langrl train` on an algorithm: dyna config")
    learner = build_dyna(cfg)
    learner.load_state_dict(load_objects(checkpoint, ["dyna"])["dyna"])
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return {"model": model, "checkpoint": str(checkpoint), "step": state.get("step"),
            "env_episodes": learner.stats.real_episodes, "env_steps": learner.stats.real_steps,
            **learner.task.exact(learner.q)}


def evaluate_kind(config: PlanConfig, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: plan`` (``num_prompts`` does not apply): a search agent on held-out
    seeds (``model``: the prior LM or ``uniform``), or a Dyna run's policy against pi* (``model``: its folder)."""
    if config.algorithm == "dyna":
        return evaluate_dyna(config, model)
    return evaluate_search(config, model, episodes)


__all__ = ["build_planner", "build_prior", "build_world_model", "evaluate_kind", "evaluate_search", "play",
           "stream_seed", "summarise_dyna", "train_plan", "write_dyna_report"]
