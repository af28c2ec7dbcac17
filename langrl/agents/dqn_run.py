"""``kind: dqn``: DQN (`langrl.agents.dqn`) as a run: run folder, metrics, checkpoints, resume, evaluation.

    config -> environment (tokenised for text) -> network (MLP, or frozen LM encoder + MLP head)
           -> DQNLearner -> repeat: advance to the next log / evaluation / checkpoint step
                                    -> evaluate the greedy policy, keep the best network -> log -> checkpoint
           -> test the final and the best network on other seeds -> report

``metrics.jsonl`` has one row every ``log.every`` environment steps (``step`` = environment steps):
``env/steps``, ``rollout/episode_return`` (episodes that ended since the last row), ``loss/td``, ``q/mean``,
``explore/epsilon``, ``time/elapsed_s``; at evaluations ``eval/mean_return`` (``eval/success_rate`` with
``eval.success``) and ``eval/best_mean_return``; at the end ``final/*`` and ``best/*``: the test of the final
and of the best network on ``eval.test_episodes`` seeds that took no part in choosing it.

A checkpoint holds the online, target and best networks, Adam's state, the learner's state (replay buffer,
environments mid-episode, random generator, step counters) and, for the LM encoder, its feature cache: a
resumed run logs what the uninterrupted run logs. The cache is saved because features computed again in
other batches differ in the last bits; it costs about 2.8 kB per distinct observation with SmolLM2-135M
(576 features and the key).

With ``network.type: lm_encoder`` the frozen LM is shared by the online, target and best networks and kept
outside their module trees (one copy, one cache, never averaged or saved): each network is a running
standardisation of the pooled features (updated with the observations the agent acts in, copied to the
target as SB3 copies ``running_*`` buffers, frozen in evaluation) and an MLP head.

With ``distributed.shards`` or ``distributed.rollout_workers`` set, the environments are collected in shards
between training phases (`langrl.agents.dqn`), in this process or on Ray workers
(`langrl.agents.dqn_collect`); the layout changes nothing. The shards act with a network of their own: for
the LM encoder, its own cache of features computed one observation at a time (the same bits in every
process), which come back with the transitions into the learner's cache, so the learner does not encode
them again. The learner's ``encoder/cache_*`` then count its own lookups only.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_model
from torch import nn

from langrl.agents.cache import LRUCache
from langrl.agents.dqn import (
    MLP,
    BestNetwork,
    DQNLearner,
    DQNSettings,
    DQNState,
    LocalShards,
    NetworkBuilder,
    ShardCollector,
    ShardStepper,
    next_stop,
    play_greedy,
    summarise,
)
from langrl.agents.dqn_collect import RayShards
from langrl.config.base import read_config_data
from langrl.config.dqn import DQNConfig, dqn_config_from_data
from langrl.envs.text.core import make_env
from langrl.errors import ConfigError
from langrl.models.loading import load_lm, resolve_device
from langrl.report.agent import write_agent_report
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import module_checkpoint, trained_config
from langrl.run.harness import Checkpointed, RunHarness, TrainResult
from langrl.run.io import read_jsonl
from langrl.run.logger import RunLogger

if TYPE_CHECKING:
    from langrl.agents.encoder import LMEncoder  # imported on use: it needs stable-baselines3

# ---------------------------------------------------------------------------------------------- networks


class SharedEncoder:
    """Holds the LM encoder without registering it as a submodule (see the module docstring)."""

    def __init__(self, encoder: LMEncoder):
        self.encoder = encoder


class EncodedQNetwork(nn.Module):
    """Token ids (B, L) -> frozen LM features (B, H) (shared, cached) -> standardised -> MLP -> (B, A)."""

    def __init__(self, encoder: LMEncoder, n_actions: int, hidden: tuple[int, ...], normalize: bool = True):
        from langrl.agents.encoder import RunningStandardize  # needs stable-baselines3 (the agents extra)

        super().__init__()
        dim = encoder.features_dim
        self.shared = SharedEncoder(encoder)
        self.standardize = RunningStandardize(dim) if normalize else None
        self.head = MLP(dim, n_actions, hidden)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.shared.encoder(obs)

    def observe(self, obs: torch.Tensor) -> None:
        """Fold the features of observations the agent acts in into the running statistics."""
        if self.standardize is not None:
            self.standardize.update(self.features(obs))

    def remember(self, obs: torch.Tensor, features: torch.Tensor) -> None:
        """Cache the features of ``obs`` that the shards computed (the encoder's cache lacking them)."""
        self.shared.encoder.remember(obs, features)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.features(obs)
        return self.head(features if self.standardize is None else self.standardize(features))


class FeatureCache:
    """Pickles the encoder's LRU cache of feature rows compactly: the keys in LRU order and one stacked
    tensor (pickled one by one, each row would carry a storage header, or the whole batch it is a view of)."""

    def __init__(self, cache: LRUCache[bytes, torch.Tensor]):
        self.cache = cache

    def __getstate__(self) -> dict[str, Any]:
        data = self.cache.data
        return {"max_size": self.cache.max_size, "keys": list(data), "hits": self.cache.hits,
                "misses": self.cache.misses, "values": torch.stack(list(data.values())).cpu() if data else None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cache = LRUCache(state["max_size"])
        self.cache.hits, self.cache.misses = state["hits"], state["misses"]
        if state["values"] is not None:
            self.cache.data.update(zip(state["keys"], state["values"].unbind(0), strict=True))

    def to(self, device: torch.device) -> LRUCache[bytes, torch.Tensor]:
        """The cache, its features moved to ``device`` (they are pickled from the CPU)."""
        for key, value in self.cache.data.items():
            self.cache.data[key] = value.to(device)
        return self.cache


def make_dqn_env(env_id: str, kwargs: dict[str, Any], max_episode_steps: int | None, tokenizer: Any = None,
                 max_tokens: int = 64) -> gym.Env:
    """The environment; with a tokenizer its text observations become token ids (`TokenizeObservation`).
    A module-level function, so that ``functools.partial`` of it pickles with the environments."""
    env = make_env(env_id, kwargs, max_episode_steps)
    if tokenizer is None:
        return env
    from langrl.envs.text.tokenize import TokenizeObservation

    return TokenizeObservation(env, tokenizer, max_tokens)


@dataclass
class DQNParts:
    """What the config builds before the learner: the environment factory, the network builder, the LM
    encoder (``lm_encoder`` runs), the device, and the builder of the network shards act with (for the LM
    encoder: on an encoder of its own, encoding one observation at a time)."""

    make: Callable[[], gym.Env]
    network: NetworkBuilder
    encoder: LMEncoder | None
    device: torch.device
    shard_network: NetworkBuilder


def space_name(space: gym.Space) -> str:
    """``Box(4,)``, ``Discrete(2)``, ``Text``: short and on one line (a Text space's repr lists its charset)."""
    if isinstance(space, gym.spaces.Box):
        return f"Box{space.shape}"
    if isinstance(space, gym.spaces.Discrete):
        return f"Discrete({space.n})"
    return type(space).__name__


def check_spaces(cfg: DQNConfig) -> None:
    """Discrete actions, and observations the network type reads (numbers for mlp, text for lm_encoder)."""
    probe = make_env(cfg.env.id, cfg.env.kwargs, cfg.env.max_episode_steps)
    obs_space, action_space = probe.observation_space, probe.action_space
    probe.close()
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"env.id = {cfg.env.id!r} has actions {space_name(action_space)}: DQN needs Discrete "
                          f"actions; use an environment with a finite set of actions")
    text = isinstance(obs_space, gym.spaces.Text)
    if cfg.network.type == "mlp" and not isinstance(obs_space, gym.spaces.Box):
        fix = "set network.type: lm_encoder" if text else "use an environment with Box observations"
        raise ConfigError(f"network.type = 'mlp' reads numeric observations; env.id = {cfg.env.id!r} gives "
                          f"{space_name(obs_space)}: {fix}")
    if cfg.network.type == "lm_encoder" and not text:
        raise ConfigError(f"network.type = 'lm_encoder' reads text observations; env.id = {cfg.env.id!r} gives "
                          f"{space_name(obs_space)}: set network.type: mlp or use a langrl text environment")


def build_parts(cfg: DQNConfig) -> DQNParts:
    """The environment factory and the network builder of ``cfg`` (loading the LM for ``lm_encoder``).

    ``device: auto`` is the CPU for an MLP (a 256 x 256 MLP at batch 1 to 64 runs faster there than it
    launches CUDA kernels) and CUDA when present for the LM encoder.
    """
    check_spaces(cfg)
    net, env = cfg.network, cfg.env
    hidden = tuple(net.hidden)
    if net.type == "mlp":
        device = torch.device("cpu") if cfg.device == "auto" else resolve_device(cfg.device)
        make = functools.partial(make_dqn_env, env.id, env.kwargs, env.max_episode_steps)
        mlp = functools.partial(MLP, hidden=hidden)
        return DQNParts(make, mlp, None, device, mlp)
    from langrl.agents.encoder import LMEncoder

    lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    make = functools.partial(make_dqn_env, env.id, env.kwargs, env.max_episode_steps, lm.tokenizer, net.max_tokens)
    space = make().observation_space
    assert isinstance(space, gym.spaces.Box)  # TokenizeObservation's ids

    def new_encoder(batch_misses: bool) -> LMEncoder:
        try:
            return LMEncoder(space, lm=lm, pooling=net.pooling, cache_size=net.cache_size, normalize=False,
                             layers=net.layers, batch_misses=batch_misses)
        except ValueError as e:
            raise ConfigError(f"network.layers = {net.layers}: {e}") from None

    encoder = new_encoder(batch_misses=True)

    def network(_obs_dim: int, n_actions: int) -> nn.Module:
        return EncodedQNetwork(encoder, n_actions, hidden, net.normalize)

    def shard_network(_obs_dim: int, n_actions: int) -> nn.Module:
        return EncodedQNetwork(new_encoder(batch_misses=False), n_actions, hidden, net.normalize)

    return DQNParts(make, network, encoder, lm.model.device, shard_network)


def dqn_settings(cfg: DQNConfig) -> DQNSettings:
    return DQNSettings(total_steps=cfg.steps, num_envs=cfg.env.num_envs, **cfg.dqn.model_dump(),
                       hidden=tuple(cfg.network.hidden), seed=cfg.seed, eval_every=cfg.eval.every,
                       eval_episodes=cfg.eval.episodes, eval_seed_start=cfg.eval.seed_start,
                       shards=cfg.collection_shards)


def network_sizes(make: Callable[[], gym.Env]) -> tuple[int, int]:
    """(observation size, number of actions) of the environment, the arguments of a network builder."""
    probe = make()
    obs_dim = int(np.prod(probe.observation_space.shape or (1,)))
    n_actions = int(probe.action_space.n)  # type: ignore[attr-defined]  # Discrete, checked in build_parts
    probe.close()
    return obs_dim, n_actions


def build_shard_stepper(cfg: DQNConfig, parts: DQNParts | None = None) -> ShardStepper:
    """What steps a DQN run's shards: the network they act with (`DQNParts.shard_network`), the settings
    and the device. A rollout worker builds it from the config alone (``parts`` None: it builds its own)."""
    parts = parts or build_parts(cfg)
    with torch.random.fork_rng(devices=[]):  # its initial weights are never read: the learner's are loaded
        q = parts.shard_network(*network_sizes(parts.make)).to(parts.device)
    return ShardStepper(q, dqn_settings(cfg), parts.device)


def build_collector(cfg: DQNConfig, parts: DQNParts) -> ShardCollector | None:
    """Where the shards are stepped: Ray rollout workers, this process, or (no shards) nowhere."""
    if cfg.collection_shards is None:
        return None
    if cfg.distributed.remote:
        return RayShards(cfg, cfg.distributed, builder="langrl.agents.dqn_run:build_shard_stepper")
    return LocalShards(build_shard_stepper(cfg, parts))


# ---------------------------------------------------------------------------------------------- train

def load_dqn_config(config: DQNConfig | dict[str, Any] | str | Path) -> DQNConfig:
    if isinstance(config, DQNConfig):
        return config
    data, base = read_config_data(config)
    return dqn_config_from_data(data, base)


def prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in values.items()}


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in (before, after]."""
    return every > 0 and after // every > before // every


def train_dqn_run(config: DQNConfig | dict[str, Any] | str | Path, output: str | Path, resume: bool = False,
                  allow_config_change: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train DQN as ``config`` (``kind: dqn``) says, in the run folder ``output``; see the module docstring.
    ``callbacks`` see every logged row (`langrl.run.callbacks`; e.g. ``StopAtThreshold("eval/mean_return",
    475)``, SB3's StopTrainingOnRewardThreshold): a stop is checkpointed, then the final and best are tested."""
    cfg = load_dqn_config(config)
    run_dir = Path(output)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    parts = build_parts(cfg)
    learner = DQNLearner(parts.make, dqn_settings(cfg), parts.network, parts.device, build_collector(cfg, parts))
    best = BestNetwork(learner.build()) if cfg.eval.every else None
    modules = {"q": learner.q, "target": learner.target, **({"best": best.network} if best else {})}
    objects: dict[str, Any] = {"state": learner.state}
    if parts.encoder is not None:
        objects["features"] = FeatureCache(parts.encoder.cache)
    checkpointed = Checkpointed(None, None, learner.optimizer, modules, objects)
    with closing(learner), RunHarness(run_dir, cfg, cfg.log, checkpointed, allow_config_change, callbacks) as harness:
        saved = harness.restore() if resume else {}
        if saved:
            restore(saved, objects, learner, parts, best)
        with harness.session(total=cfg.steps, desc="dqn") as logger:
            last = train_loop(cfg, learner, parts, best, harness, logger, float(saved.get("elapsed_s", 0.0)))
            tests = test_networks(cfg, learner.q, best, parts)
            logger.log_metrics(learner.step, {"env/steps": learner.step, **tests})
    write_agent_report(run_dir)
    return TrainResult(run_dir=run_dir, metrics={**last, **tests}, summary=summarise_dqn(run_dir))


def restore(saved: dict[str, Any], objects: dict[str, Any], learner: DQNLearner, parts: DQNParts,
            best: BestNetwork | None) -> None:
    """Put what `RunHarness.restore` read back (``saved``: the trainer state; ``objects``) in place."""
    state: DQNState = objects["state"]
    saved_shards = None if state.shards is None else len(state.shards)
    if saved_shards != learner.s.shards:
        raise ConfigError(f"distributed: the checkpoint's environments were collected in {saved_shards or 'no'} "
                          f"shards, the config asks for {learner.s.shards or 'none'}; resume with the run's own "
                          f"distributed section")
    learner.close_envs()  # the fresh environments; the checkpoint's replace them
    learner.state = state
    if parts.encoder is not None:
        parts.encoder.cache = objects["features"].to(parts.device)
    if best is not None and saved.get("best_step") is not None:
        best.mean_return, best.step = float(saved["best_mean_return"]), int(saved["best_step"])


def train_loop(cfg: DQNConfig, learner: DQNLearner, parts: DQNParts, best: BestNetwork | None,
               harness: RunHarness, logger: RunLogger, elapsed_s: float) -> dict[str, float]:
    """Advance from the learner's step to ``cfg.steps``, stopping to log, evaluate and checkpoint."""
    clock = time.perf_counter() - elapsed_s
    last: dict[str, float] = {}
    while learner.step < cfg.steps and not harness.stop_requested:
        before = learner.step
        chunk = learner.advance(next_stop(before, cfg.steps, cfg.log.every, cfg.eval.every,
                                          cfg.log.checkpoint_every) - before)
        step, end = learner.step, learner.step >= cfg.steps
        row = {**chunk.metrics(), "time/env_step_s": chunk.seconds / (step - before)}
        if best is not None and (crossed(before, step, cfg.eval.every) or end):
            row.update(evaluate_and_select(cfg, learner, parts, best))
        if parts.encoder is not None:  # distinct observations encoded (the LM's cost), and re-reads
            row.update({"encoder/cache_misses": parts.encoder.cache.misses,
                        "encoder/cache_hits": parts.encoder.cache.hits})
        row["time/elapsed_s"] = time.perf_counter() - clock
        harness.log(logger, step, row)
        if crossed(before, step, cfg.log.checkpoint_every) or end or harness.stop_requested:
            found = best is not None and best.step >= 0
            harness.checkpoint(step, {"env_steps": step, "elapsed_s": time.perf_counter() - clock,
                                      "best_mean_return": best.mean_return if best and found else None,
                                      "best_step": best.step if best and found else None})
        harness.bar.update(step - before)
        harness.bar.set_postfix({k.split("/")[-1]: f"{row[k]:.3g}" for k in ("rollout/episode_return",
                                 "eval/mean_return") if k in row})
        last = row
    return last


def evaluate_and_select(cfg: DQNConfig, learner: DQNLearner, parts: DQNParts, best: BestNetwork) -> dict[str, float]:
    """``eval/*``: the greedy policy on the evaluation seeds; the best network is replaced if it beats it."""
    t0 = time.perf_counter()
    seeds = range(cfg.eval.seed_start, cfg.eval.seed_start + cfg.eval.episodes)
    stats = summarise(play_greedy(learner.q, parts.make, seeds, cfg.eval.parallel, parts.device), cfg.eval.success)
    best.offer(learner.q, stats["mean_return"], learner.step)
    return {**prefixed("eval", stats), "eval/best_mean_return": best.mean_return,
            "time/eval_s": time.perf_counter() - t0}


def test_networks(cfg: DQNConfig, q: nn.Module, best: BestNetwork | None, parts: DQNParts,
                  episodes: int | None = None) -> dict[str, float]:
    """``final/*`` and (when an evaluation chose one) ``best/*``: greedy episodes on the test seeds."""
    n = cfg.eval.test_episodes if episodes is None else episodes
    seeds = range(cfg.eval.test_seed_start, cfg.eval.test_seed_start + n)

    def test(network: nn.Module) -> dict[str, float]:
        return summarise(play_greedy(network, parts.make, seeds, cfg.eval.parallel, parts.device), cfg.eval.success)

    out = prefixed("final", test(q))
    if best is not None and best.step >= 0:
        out.update({**prefixed("best", test(best.network)), "best/env_steps": best.step,
                    "best/eval_mean_return": best.mean_return})
    return out


def summarise_dqn(run_dir: Path) -> dict[str, Any]:
    """The run's evaluations (env steps, mean return), its last test of the final and best networks, its
    environment steps and wall time, from ``metrics.jsonl``; ``headline``: what the CLI prints."""
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    evaluations = [[r["env/steps"], r["eval/mean_return"]] for r in rows if r.get("eval/mean_return") is not None]
    tests: dict[str, Any] = next((r for r in reversed(rows) if "final/mean_return" in r), {})
    times = [r["time/elapsed_s"] for r in rows if r.get("time/elapsed_s") is not None]
    out: dict[str, Any] = {
        "env_steps": max((r.get("env/steps") or 0 for r in rows), default=0), "wall_s": times[-1] if times else None,
        "evaluations": evaluations,
        "final": {k.split("/", 1)[1]: v for k, v in tests.items() if k.startswith("final/")},
        "best": {k.split("/", 1)[1]: v for k, v in tests.items() if k.startswith("best/")}}
    out["headline"] = [f"{name} network: mean return {r['mean_return']:.1f} +- {r['std_return']:.1f} over "
                       f"{r['episodes']:.0f} test episodes" + (f" (chosen at {r['env_steps']:.0f} env steps, "
                                                               f"evaluation {r['eval_mean_return']:.1f})"
                                                               if name == "best" else "")
                       for name in ("final", "best") if (r := out[name])]
    out["headline"].append(f"{out['env_steps']:.0f} env steps in {out['wall_s'] or 0:.0f} s")
    return out


# ---------------------------------------------------------------------------------------------- evaluation

def evaluate_kind(config: DQNConfig, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: dqn`` (``num_prompts`` does not apply): the greedy policy of the best
    network (the final one when no evaluation chose one) on ``episodes`` (default ``eval.test_episodes``)
    test seeds; ``final`` and ``best`` hold each network's figures."""
    path = module_checkpoint(model, "q.safetensors", "DQN")
    cfg: DQNConfig = trained_config(path, config, "dqn")
    parts = build_parts(cfg)
    obs_dim, n_actions = network_sizes(parts.make)
    state = json.loads((path / "trainer_state.json").read_text()) if (path / "trainer_state.json").is_file() else {}
    names = {"final": "q", **({"best": "best"} if state.get("best_step") is not None else {})}
    t0, results = time.perf_counter(), {}
    n = cfg.eval.test_episodes if episodes is None else episodes
    for name, file in names.items():
        network = parts.network(obs_dim, n_actions).to(parts.device)
        load_model(network, str(path / f"{file}.safetensors"))
        network.eval()
        seeds = range(cfg.eval.test_seed_start, cfg.eval.test_seed_start + n)
        results[name] = summarise(play_greedy(network, parts.make, seeds, cfg.eval.parallel, parts.device),
                                  cfg.eval.success)
    chosen = "best" if "best" in results else "final"
    return {"model": model, "checkpoint": str(path), "env": cfg.env.id, "network": chosen, **results[chosen],
            "seeds": [cfg.eval.test_seed_start, cfg.eval.test_seed_start + n - 1], "final": results["final"],
            "best": results.get("best"), "best_env_steps": state.get("best_step"),
            "time_s": time.perf_counter() - t0}
