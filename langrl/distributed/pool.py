"""Rollout workers on Ray: the actors, the weight publish, and failures turned into errors or restarts.

Each worker is a Ray actor that rebuilds the run from its config (``builder``: a ``"module:function"``
name, so this module imports no training loop) and then only collects. Once per version the learner puts
the weights collection reads into Ray's object store as one object; every worker loads it once.

Failures end in an error, never a hang: every remote call waits at most ``distributed.timeout_s``
(``start_timeout_s`` for an actor's start). A dead actor is replaced, given the current weights (and,
through ``on_restart``, whatever state it held), and its work is asked of it again, up to
``distributed.max_restarts`` times in a run.
"""

from __future__ import annotations

import importlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import torch

from langrl.config.distributed import DistributedConfig
from langrl.errors import ConfigError, LangrlError


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


def worker_config(config: Any) -> dict[str, Any]:
    """A run's config as a worker builds it: collecting in its own process, no workers of its own."""
    data = config.model_dump(mode="json")
    data["distributed"] = {}
    data["log"] = {**data["log"], "progress": False}
    return data


class Worker:
    """Base of the Ray actors: the run rebuilt from its config, then weights loaded by version."""

    def __init__(self, config: dict[str, Any], threads: int, builder: str):
        from transformers.utils import logging as hf_logging

        from langrl.config import load_any_config

        hf_logging.disable_progress_bar()  # N workers' "Loading weights" bars would interleave in the driver's log
        module, name = builder.split(":")
        torch.set_num_threads(threads)
        self.run = getattr(importlib.import_module(module), name)(load_any_config(config))
        torch.set_num_threads(threads)  # the config's own `threads` must not override the worker's
        self.version = -1

    def ready(self) -> int:
        return os.getpid()

    def sync(self, state: dict[str, Any], version: int) -> int:
        """Load the weights of ``version`` (``state``: arrays by name, see `load`)."""
        if version != self.version:
            self.load(state)
            self.version = version
        return self.version

    def load(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class WorkerPool:
    """``dist.rollout_workers`` actors of ``actor_cls``, and the learner's side of talking to them."""

    def __init__(self, actor_cls: type[Worker], config: Any, dist: DistributedConfig, builder: str,
                 on_restart: Callable[[int, Any], None] | None = None):
        """``on_restart(i, actor)``: give a replacement of worker i the state the dead one held."""
        self.ray = import_ray()
        self.dist, self.on_restart = dist, on_restart
        self.started_ray = connect(dist, dist.rollout_workers * dist.cpus_per_worker)
        self.check_resources()
        threads = dist.threads_per_worker or config.threads or max(1, int(dist.cpus_per_worker))
        self.args = (worker_config(config), threads, builder)
        self.prefix = f"langrl-rollout-{uuid.uuid4().hex[:8]}"
        self.remote_cls = self.ray.remote(actor_cls)
        self.restarts = 0
        self.sync_s = 0.0  # seconds spent publishing weights since `take_sync_s`
        self.state_ref: Any = None
        self.version = -1
        self.actors = [self.make_actor(i) for i in range(dist.rollout_workers)]
        for i, actor in enumerate(self.actors):
            self.wait(actor.ready.remote(), self.dist.start_timeout_s, f"rollout worker {i} to start",
                      "start_timeout_s")

    def __len__(self) -> int:
        return len(self.actors)

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
        return self.remote_cls.options(**options).remote(*self.args)

    def wait(self, ref: Any, timeout: float, what: str, field: str = "timeout_s") -> Any:
        try:
            return self.ray.get(ref, timeout=timeout)
        except self.ray.exceptions.GetTimeoutError:
            raise DistributedError(f"no answer from {what} within distributed.{field}={timeout:g} s; raise it "
                                   f"if that is just slow, or see the worker's log (ray logs)") from None

    def publish(self, state: Callable[[], dict[str, Any]], version: int) -> None:
        """Put the weights of ``version`` (``state()``, computed only when the version is new) in the object
        store once and have every worker load them."""
        if version == self.version:
            return
        t0 = time.perf_counter()
        self.state_ref = self.ray.put(state())
        self.version = version
        refs = [actor.sync.remote(self.state_ref, version) for actor in self.actors]
        for i, ref in enumerate(refs):
            self.get(i, ref, f"the weight sync of version {version} on rollout worker {i}", redo=None)
        self.sync_s += time.perf_counter() - t0

    def take_sync_s(self) -> float:
        """Seconds spent publishing since the last call."""
        spent, self.sync_s = self.sync_s, 0.0
        return spent

    def get(self, i: int, ref: Any, what: str, redo: Callable[[Any], Any] | None) -> Any:
        """Wait for ``ref`` from worker ``i``; if the worker died, replace it and (with ``redo(actor)``,
        which sends the call again) wait for the replacement's answer."""
        while True:
            try:
                return self.wait(ref, self.dist.timeout_s, what)
            except self.ray.exceptions.RayActorError:
                self.restart(i)
                if redo is None:
                    return None
                ref = redo(self.actors[i])

    def restart(self, i: int) -> None:
        """Replace dead worker ``i`` with a new actor holding the current weights (and its state)."""
        self.restarts += 1
        if self.restarts > self.dist.max_restarts:
            raise DistributedError(f"rollout worker {i} died, and {self.restarts - 1} restarts were already "
                                   f"used (distributed.max_restarts={self.dist.max_restarts}); see ray logs")
        actor = self.make_actor(i)
        self.actors[i] = actor
        self.wait(actor.ready.remote(), self.dist.start_timeout_s, f"replacement rollout worker {i}",
                  "start_timeout_s")
        if self.state_ref is not None:
            self.wait(actor.sync.remote(self.state_ref, self.version), self.dist.timeout_s,
                      f"the weight sync of replacement rollout worker {i}")
        if self.on_restart is not None:
            self.on_restart(i, actor)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started_ray:
            self.ray.shutdown()
