"""Rollout workers of LM runs: each samples and scores shards of a step's prompts with the learner's
latest weights (`sampling_state`: the LoRA adapter alone with LoRA), shard k on worker k mod N; every
shard comes back stamped with the version of the weights that produced it (`langrl.distributed.pool`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langrl.config.distributed import DistributedConfig
from langrl.distributed.pool import Worker, WorkerPool
from langrl.lm.collect import ShardResult, StepSamples, join_shards, step_shards

if TYPE_CHECKING:
    from langrl.lm.trainer import Run


class RolloutActor(Worker):
    """One rollout worker of an LM run."""

    def load(self, state: dict[str, Any]) -> None:
        from langrl.lm.collect import load_sampling_state

        load_sampling_state(self.run, state)

    def collect(self, step: int, shard: int, shards: int, indices: list[int]) -> ShardResult:
        from langrl.lm.collect import collect_shard

        return collect_shard(self.run, step, shard, shards, indices, self.version)


class RayCollector:
    """The :class:`~langrl.lm.collect.Collector` of rollout workers on Ray."""

    def __init__(self, run: Run, dist: DistributedConfig, builder: str):
        """``builder``: ``"module:function"`` that builds a run from its config in a worker."""
        self.run, self.shards = run, dist.shard_count
        self.pool = WorkerPool(RolloutActor, run.config, dist, builder)
        self.pending: dict[int, list[tuple[int, int, list[int], Any]]] = {}  # step -> (shard, worker, ...)

    def submit(self, step: int, indices: Sequence[int], version: int) -> None:
        from langrl.lm.collect import sampling_state

        self.pool.publish(lambda: sampling_state(self.run), version)
        jobs = []
        for k, part in step_shards(indices, self.shards):
            worker = k % len(self.pool)
            jobs.append((k, worker, part, self.pool.actors[worker].collect.remote(step, k, self.shards, part)))
        self.pending[step] = jobs

    def result(self, step: int) -> StepSamples:
        results = [self.shard_result(step, *job) for job in self.pending.pop(step)]
        samples = join_shards(results, self.run.tokenizer.pad_token_id)
        samples.sync_s = self.pool.take_sync_s()
        return samples

    def shard_result(self, step: int, shard: int, worker: int, part: list[int], ref: Any) -> ShardResult:
        """Wait for one shard; a dead worker's replacement collects it again (same stream, same result)."""
        def redo(actor: Any) -> Any:
            return actor.collect.remote(step, shard, self.shards, part)

        result: ShardResult = self.pool.get(worker, ref, f"rollout worker {worker} (step {step}, shard {shard})", redo)
        return result

    def close(self) -> None:
        self.pool.close()
