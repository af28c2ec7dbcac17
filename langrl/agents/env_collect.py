"""Collecting an LM agent's rollouts in shards of its vector environments, in-process or on Ray workers.

The N environments are cut into ``distributed.shards`` contiguous shards; shard k's environments are
reset with the seeds they have in the unsharded vector environment (seed + index), keep their state from
rollout to rollout, and act with the random stream (seed, "agent_step", update, k). One shard keeps the
single-process stream (the update's generator, which then shuffles the minibatches). Wherever shards run,
the learner holds every shard's environments as they were after the last rollout: that is what a
checkpoint saves and what a replacement worker starts from.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from langrl.config.distributed import DistributedConfig
from langrl.distributed.pool import Worker, WorkerPool
from langrl.distributed.shards import shard_indices
from langrl.distributed.weights import load_arrays, trainable_arrays
from langrl.rollout.env_steps import ReferenceScorer, StepRollout, VecState, collect_steps, start_envs
from langrl.run import seeds

if TYPE_CHECKING:
    from langrl.agents.lm_policy import LMPolicy
    from langrl.config.agent import AgentConfig
    from langrl.models import Reference


@dataclass
class AgentRun:
    """The live objects an agent's rollouts need: the environments' factory, the policy, the reference."""

    config: AgentConfig
    make: Callable[[], gym.Env]
    policy: LMPolicy
    reference: Reference | None
    scorer: ReferenceScorer | None


def start_shards(run: AgentRun, shards: int) -> list[VecState]:
    """The environments of each shard, reset as they are in one vector environment of all N."""
    base = seeds.derive_seed(run.config.seed, "envs")
    out = []
    for part in shard_indices(range(run.config.env.num_envs), shards):  # none empty: the config checks
        out.append(start_envs(run.make, len(part), run.policy.window, base + part[0]))
    return out


def collect_shard(run: AgentRun, state: VecState, update: int, shard: int, shards: int,
                  generator: torch.Generator | None = None) -> StepRollout:
    """``ppo.n_steps`` actions in each of the shard's environments (``generator``: one shard's stream)."""
    cfg = run.config
    if shards > 1:
        generator = seeds.generator(cfg.seed, "agent_step", update, shard)
    assert generator is not None, "one shard samples from the update's generator"
    reward_coef = cfg.kl.coef if cfg.kl.mode == "reward" else 0.0
    return collect_steps(run.policy, state, cfg.ppo.n_steps, cfg.ppo.gamma, generator, run.scorer, reward_coef)


def join_rollouts(parts: Sequence[StepRollout]) -> StepRollout:
    """The shards' rollouts as one over all environments, in shard order: (T, N_k) -> (T, N); prompt rows
    ``t * N + n`` as one vector environment numbers them."""
    if len(parts) == 1:
        return parts[0]
    steps = parts[0].actions.size(0)
    widths = [p.actions.size(1) for p in parts]
    prompts = [p.prompts[t * w + n] for t in range(steps) for p, w in zip(parts, widths, strict=True)
               for n in range(w)]

    def cat(field: str, dim: int = 1) -> torch.Tensor:
        return torch.cat([getattr(p, field) for p in parts], dim=dim)

    def optional(field: str) -> torch.Tensor | None:
        return None if getattr(parts[0], field) is None else cat(field)

    return StepRollout(prompts=prompts, actions=cat("actions"), logprobs=cat("logprobs"), values=cat("values"),
                       rewards=cat("rewards"), dones=cat("dones"), last_values=cat("last_values", 0),
                       ref_logits=optional("ref_logits"), kl=optional("kl"),
                       finished=[f for p in parts for f in p.finished])


def policy_state(run: AgentRun) -> dict[str, np.ndarray]:
    """The weights a worker acts with: the policy's trainable parameters (LoRA: the adapter) and head."""
    return trainable_arrays(run.policy, "policy")


class EnvShards:
    """Every shard's environments as the learner holds them between rollouts."""

    def __init__(self, run: AgentRun, shards: int):
        self.run, self.shards = run, shards
        self.states = start_shards(run, shards)

    def env_state(self) -> VecState | list[VecState]:
        """What a checkpoint saves: the environments (one shard: its vector environment, as before shards)."""
        return self.states[0] if self.shards == 1 else list(self.states)

    def load_env_state(self, saved: VecState | list[VecState]) -> None:
        """Continue from a checkpoint's environments."""
        self.close_envs()
        self.states = [saved] if isinstance(saved, VecState) else list(saved)

    def close_envs(self) -> None:
        for state in self.states:
            state.envs.close()


class LocalEnvCollector(EnvShards):
    """The shards stepped one after another in the learner, with its live policy."""

    def collect(self, update: int, version: int, generator: torch.Generator) -> tuple[StepRollout, float]:
        """The update's rollout over all environments, and the seconds spent publishing weights (none here)."""
        parts = [collect_shard(self.run, state, update, k, self.shards, generator)
                 for k, state in enumerate(self.states)]
        return join_rollouts(parts), 0.0

    def close(self) -> None:
        self.close_envs()


class EnvShardActor(Worker):
    """One rollout worker of an agent run: it keeps no environments; each call brings a shard's and takes
    them back, so a replacement worker just gets the same call again."""

    def load(self, state: dict[str, Any]) -> None:
        load_arrays({"policy": self.run.policy}, state)

    def collect(self, state: VecState, update: int, shard: int, shards: int) -> tuple[StepRollout, VecState]:
        """Step the shard's environments ``state``; return the rollout and the environments after it."""
        state = copy.deepcopy(state)  # Ray hands the arrays inside it over read-only, from shared memory
        return collect_shard(self.run, state, update, shard, shards), state


class RayEnvCollector(EnvShards):
    """Shards on rollout workers (shard k on worker k mod N)."""

    def __init__(self, run: AgentRun, dist: DistributedConfig, builder: str):
        super().__init__(run, dist.shard_count)
        self.pool = WorkerPool(EnvShardActor, run.config, dist, builder)

    def collect(self, update: int, version: int, generator: torch.Generator) -> tuple[StepRollout, float]:
        self.pool.publish(lambda: policy_state(self.run), version)
        jobs = [(k, k % len(self.pool)) for k in range(self.shards)]
        refs = [self.pool.actors[w].collect.remote(self.states[k], update, k, self.shards) for k, w in jobs]
        parts = []
        for (k, worker), ref in zip(jobs, refs, strict=True):
            def redo(actor: Any, k: int = k) -> Any:
                return actor.collect.remote(self.states[k], update, k, self.shards)

            rollout, self.states[k] = self.pool.get(worker, ref, f"rollout worker {worker} (update {update}, "
                                                                 f"shard {k})", redo)
            parts.append(rollout)
        return join_rollouts(parts), self.pool.take_sync_s()

    def close(self) -> None:
        self.close_envs()
        self.pool.close()
