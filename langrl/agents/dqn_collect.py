"""DQN's shards on Ray rollout workers: each worker rebuilds the network the shards act with from the
run's config, loads the learner's weights once per version, and steps the shards it is sent.

A worker keeps no environments: each call brings a shard's and takes them back (the learner holds every
shard's environments: a checkpoint saves them, and a replacement worker just gets the same call again).
Shard k goes to worker k mod N; the learner gets the shards' steps back in shard order, so the run is the
in-process one (`langrl.agents.dqn.LocalShards`) with the same shards.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from langrl.agents.dqn import EnvShard, ShardStepper, ShardSteps
from langrl.config.distributed import DistributedConfig
from langrl.distributed.pool import Worker, WorkerPool
from langrl.distributed.weights import load_arrays, state_arrays


class DQNShardActor(Worker):
    """One rollout worker of a DQN run; ``run`` is the `ShardStepper` its builder made."""

    run: ShardStepper

    def load(self, state: dict[str, Any]) -> None:
        load_arrays({"q": self.run.q}, state)

    def collect(self, shard: EnvShard, first_call: int, calls: int, index: int) -> tuple[ShardSteps, EnvShard]:
        """Step shard ``index``'s environments; return its steps and the environments after them."""
        shard = copy.deepcopy(shard)  # Ray hands the arrays inside it over read-only, from shared memory
        return self.run.step(shard, first_call, calls, index), shard


class RayShards:
    """The shards on ``dist.rollout_workers`` Ray actors (a `ShardCollector`)."""

    def __init__(self, config: Any, dist: DistributedConfig, builder: str):
        """``builder``: the ``"module:function"`` that makes a `ShardStepper` from the run's config."""
        self.pool = WorkerPool(DQNShardActor, config, dist, builder)

    def collect(self, q: nn.Module, version: int, shards: list[EnvShard], first_call: int,
                calls: int) -> list[ShardSteps]:
        # parameters and buffers: the LM encoder network's running statistics are buffers
        self.pool.publish(lambda: state_arrays(q, "q"), version)
        jobs = [(k, k % len(self.pool)) for k in range(len(shards))]
        refs = [self.pool.actors[w].collect.remote(shards[k], first_call, calls, k) for k, w in jobs]
        out = []
        for (k, worker), ref in zip(jobs, refs, strict=True):
            def redo(actor: Any, k: int = k) -> Any:
                return actor.collect.remote(shards[k], first_call, calls, k)

            steps, shards[k] = self.pool.get(worker, ref, f"rollout worker {worker} (vector step {first_call}, "
                                                          f"shard {k})", redo)
            out.append(steps)
        return out

    def close(self) -> None:
        self.pool.close()
