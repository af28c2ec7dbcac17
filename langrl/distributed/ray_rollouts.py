"""Rollout workers on Ray: N actors sample and score a step's shards with the learner's latest weights.

Each actor builds the run from its config as the learner does (model, LoRA, algorithm, reward, prompts)
and then only samples. Once per step the learner puts the weights sampling reads into Ray's object store
(`sampling_state`: the LoRA adapter alone with LoRA) as one versioned object; every actor loads it once,
and every shard comes back stamped with the version that produced it. Shard k goes to actor k mod N.

Failures end in an error, never a hang: every remote call waits at most ``distributed.timeout_s``
(``start_timeout_s`` for an actor's start). A dead actor is replaced, given the current weights and its
shards again, up to ``distributed.max_restarts`` times in a run.
"""

from __future__ import annotations

import importlib
import os
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from langrl.config.distributed import DistributedConfig
from langrl.errors import ConfigError, LangrlError
from langrl.lm.collect import ShardResult, StepSamples, join_shards, step_shards

if TYPE_CHECKING:
    from langrl.config import Config
    from langrl.lm.trainer import Run


class DistributedError(LangrlError):
    """A rollout worker did not answer in time, or too many died."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("distributed.rollout_workers > 0 needs Ray: pip install 'langrl[ray]' (or set "
                          "distributed.rollout_workers=0 to sample in the learner)") from None
    return ray


def connect(dist: DistributedConfig, needed_cpus: float) -> bool:
    """Join the configured Ray cluster, or start a local one; return whether this call started Ray."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = dist.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return True
    # A local Ray gets at least the CPUs the workers ask for: oversubscribing cores is the user's choice.
    ray.init(num_cpus=max(os.cpu_count() or 1, int(needed_cpus + 0.999)), include_dashboard=False,
             log_to_driver=True)
    return True


def worker_config(cfg: Config) -> dict[str, Any]:
    """The run's config as a worker builds it: sampling in its own process, no workers of its own."""
    data = cfg.model_dump(mode="json")
    data["distributed"] = {}
    data["log"] = {**data["log"], "progress": False}
    return data


class RolloutActor:
    """One rollout worker (a Ray actor): the run rebuilt from its config, sampling shards on request."""

    def __init__(self, config: dict[str, Any], threads: int, builder: str):
        from transformers.utils import logging as hf_logging

        from langrl.config import load_config

        hf_logging.disable_progress_bar()  # N workers' "Loading weights" bars would interleave in the driver's log
        module, name = builder.split(":")
        torch.set_num_threads(threads)
        self.run = getattr(importlib.import_module(module), name)(load_config(config))
        torch.set_num_threads(threads)  # the config's own `threads` must not override the worker's
        self.version = -1

    def ready(self) -> int:
        return os.getpid()

    def sync(self, state: dict[str, Any], version: int) -> int:
        """Load the weights of ``version`` (``state``: `sampling_state` arrays)."""
        from langrl.lm.collect import load_sampling_state

        if version != self.version:
            load_sampling_state(self.run, state)
            self.version = version
        return self.version

    def collect(self, step: int, shard: int, shards: int, indices: list[int]) -> ShardResult:
        from langrl.lm.collect import collect_shard

        return collect_shard(self.run, step, shard, shards, indices, self.version)


class RayCollector:
    """The :class:`~langrl.lm.collect.Collector` of rollout workers on Ray."""

    def __init__(self, run: Run, dist: DistributedConfig, builder: str):
        """``builder``: ``"module:function"`` that builds a run from its config in a worker."""
        self.ray = import_ray()
        self.builder = builder
        self.run, self.dist = run, dist
        self.shards = dist.shard_count
        self.started_ray = connect(dist, dist.rollout_workers * dist.cpus_per_worker)
        self.check_resources()
        self.threads = dist.threads_per_worker or run.config.threads or max(1, int(dist.cpus_per_worker))
        self.prefix = f"langrl-rollout-{uuid.uuid4().hex[:8]}"
        self.remote_cls = self.ray.remote(RolloutActor)
        self.config = worker_config(run.config)
        self.restarts = 0
        self.sync_s = 0.0  # seconds spent publishing weights since the last result
        self.state_ref: Any = None
        self.version = -1
        self.pending: dict[int, list[tuple[int, int, list[int], Any]]] = {}  # step -> (shard, worker, ...)
        self.actors = [self.make_actor(i) for i in range(dist.rollout_workers)]
        for i, actor in enumerate(self.actors):
            self.wait(actor.ready.remote(), self.dist.start_timeout_s, f"rollout worker {i} to start",
                      "start_timeout_s")

    def check_resources(self) -> None:
        """An existing cluster without room for the workers would leave them pending forever: say so now."""
        needed = {"CPU": self.dist.rollout_workers * self.dist.cpus_per_worker,
                  "GPU": self.dist.rollout_workers * self.dist.gpus_per_worker}
        total = self.ray.cluster_resources()
        for name, amount in needed.items():
            if amount > total.get(name, 0.0):
                raise ConfigError(f"distributed.rollout_workers={self.dist.rollout_workers} ask for {amount:g} "
                                  f"{name}s, the Ray cluster has {total.get(name, 0.0):g}; lower "
                                  f"rollout_workers or cpus_per_worker / gpus_per_worker")

    def make_actor(self, i: int) -> Any:
        options = {"num_cpus": self.dist.cpus_per_worker, "num_gpus": self.dist.gpus_per_worker,
                   "name": f"{self.prefix}-{i}-{self.restarts}", "max_restarts": 0}
        return self.remote_cls.options(**options).remote(self.config, self.threads, self.builder)

    def wait(self, ref: Any, timeout: float, what: str, field: str = "timeout_s") -> Any:
        try:
            return self.ray.get(ref, timeout=timeout)
        except self.ray.exceptions.GetTimeoutError:
            raise DistributedError(f"no answer from {what} within distributed.{field}={timeout:g} s; raise it "
                                   f"if that is just slow, or see the worker's log (ray logs)") from None

    def publish(self, version: int) -> None:
        """Put the learner's weights in the object store once and send every worker the reference."""
        from langrl.lm.collect import sampling_state

        if version == self.version:
            return
        t0 = time.perf_counter()
        self.state_ref = self.ray.put(sampling_state(self.run))
        self.version = version
        refs = [actor.sync.remote(self.state_ref, version) for actor in self.actors]
        for i, ref in enumerate(refs):
            self.call(i, ref, f"the weight sync of version {version} on rollout worker {i}")
        self.sync_s += time.perf_counter() - t0

    def submit(self, step: int, indices: Sequence[int], version: int) -> None:
        self.publish(version)
        jobs = []
        for k, part in step_shards(indices, self.shards):
            worker = k % len(self.actors)
            jobs.append((k, worker, part, self.actors[worker].collect.remote(step, k, self.shards, part)))
        self.pending[step] = jobs

    def result(self, step: int) -> StepSamples:
        results = [self.shard_result(worker, step, shard, part, ref)
                   for shard, worker, part, ref in self.pending.pop(step)]
        samples = join_shards(results, self.run.tokenizer.pad_token_id)
        samples.sync_s, self.sync_s = self.sync_s, 0.0
        return samples

    def shard_result(self, worker: int, step: int, shard: int, part: list[int], ref: Any) -> ShardResult:
        """Wait for one shard; when its worker died, replace the worker and collect the shard again."""
        while True:
            try:
                return self.wait(ref, self.dist.timeout_s, f"rollout worker {worker} (step {step}, shard {shard})")
            except self.ray.exceptions.RayActorError:
                self.restart(worker)
                ref = self.actors[worker].collect.remote(step, shard, self.shards, part)

    def call(self, worker: int, ref: Any, what: str) -> Any:
        """One remote call to ``worker``, restarting it (and repeating the sync) if it died."""
        try:
            return self.wait(ref, self.dist.timeout_s, what)
        except self.ray.exceptions.RayActorError:
            self.restart(worker)
            return None

    def restart(self, worker: int) -> None:
        """Replace a dead worker with a new actor holding the current weights."""
        self.restarts += 1
        if self.restarts > self.dist.max_restarts:
            raise DistributedError(f"rollout worker {worker} died, and {self.restarts - 1} restarts were already "
                                   f"used (distributed.max_restarts={self.dist.max_restarts}); see ray logs")
        actor = self.make_actor(worker)
        self.actors[worker] = actor
        self.wait(actor.ready.remote(), self.dist.start_timeout_s, f"replacement rollout worker {worker}",
                  "start_timeout_s")
        if self.state_ref is not None:
            self.wait(actor.sync.remote(self.state_ref, self.version), self.dist.timeout_s,
                      f"the weight sync of replacement rollout worker {worker}")

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started_ray:
            self.ray.shutdown()
