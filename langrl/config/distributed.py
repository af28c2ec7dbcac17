"""The ``distributed:`` section: where a run's rollouts are collected (in-process or on Ray actors).

The step's prompts are cut into ``shards``; shard k of step s is sampled with the random stream
(seed, step, k) wherever it runs, so the layout of workers never changes what a run computes: with the
same ``shards`` (and the same torch ``threads`` in every process), 0, 1 and 2 workers give identical runs.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from langrl.config.base import Section


class DistributedConfig(Section):
    """Rollout workers on Ray (``pip install 'langrl[ray]'``)."""

    rollout_workers: int = Field(0, ge=0, description="Ray actors that sample (and score) the rollouts; 0 "
                                                      "samples in the learner's process")
    learners: int = Field(1, ge=1, description="data-parallel learners on Ray Train (gloo on CPU, NCCL on "
                          "GPU): each samples its shards and computes every learners-th micro-batch's "
                          "gradients (ppo: every learners-th row of each minibatch); set "
                          "train.micro_batch_size so the batch has at least that many")
    cpus_per_learner: float = Field(1.0, gt=0, description="CPUs Ray reserves for each learner")
    gpus_per_learner: float = Field(0.0, ge=0, description="GPUs Ray reserves for each learner")
    shards: int | None = Field(None, ge=1, description="pieces the step's prompts are cut into, each with "
                               "its own random stream; null: one per rollout worker or learner (else 1). "
                               "Keep it fixed to compare layouts: the results depend on it, not on workers")
    address: str | None = Field(None, description="Ray cluster to join ('auto', 'ray://host:10001', "
                                "'host:6379'); null: join RAY_ADDRESS if set, else start a local Ray")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each rollout worker")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs Ray reserves for each rollout worker")
    threads_per_worker: int = Field(0, ge=0, description="torch threads in each worker; 0: the run's "
                                    "`threads` if set, else cpus_per_worker (equal threads everywhere "
                                    "give bit-identical results across layouts on CPU)")
    timeout_s: float = Field(300.0, gt=0, description="longest wait for one weight sync or one shard; "
                             "past it the run stops with an error instead of hanging")
    start_timeout_s: float = Field(600.0, gt=0, description="longest wait for a worker to start (it loads "
                                   "the model, the reward and the prompts)")
    max_restarts: int = Field(3, ge=0, description="workers that may die in a run: each is replaced and its "
                              "shard collected again; one more stops the run")
    overlap: bool = Field(False, description="sample step s+1 with the weights before step s's update while "
                          "the learner updates (one step off-policy); see max_staleness")
    max_staleness: int = Field(0, ge=0, description="the oldest weights a batch may come from, in updates "
                               "behind the learner: a staler batch is rejected and sampled again; one within "
                               "it is kept (the update's clipped ratio pi / pi_behaviour corrects it)")
    @property
    def remote(self) -> bool:
        """Whether rollouts come from Ray actors."""
        return self.rollout_workers > 0

    @property
    def shard_count(self) -> int:
        return self.shards if self.shards is not None else max(1, self.rollout_workers, self.learners)

    @model_validator(mode="after")
    def consistent(self) -> DistributedConfig:
        if self.learners > 1 and self.remote:
            raise ValueError("distributed.learners > 1 samples on the learners: set distributed.rollout_workers=0 "
                             "(learners fed by separate rollout workers are not supported yet)")
        if self.overlap and not self.remote:
            raise ValueError("distributed.overlap samples while the learner updates: it needs "
                             "distributed.rollout_workers >= 1")
        if self.max_staleness > 0 and not self.overlap:
            raise ValueError(f"distributed.max_staleness={self.max_staleness} has no effect without "
                             "distributed.overlap: true (synchronous batches are never stale); set it to 0")
        return self


def env_shards_problem(dist: DistributedConfig, num_envs: int, run: str, field: str = "env.num_envs",
                       item: str = "an environment") -> str | None:
    """What is wrong with ``dist`` for a run whose shards are slices of ``field`` = ``num_envs`` environments
    (an agent or DQN run; ``run`` names it in the message; a reply_dqn run's are slices of a round's
    ``reply_dqn.parallel`` episodes, ``item`` "an episode"), or None."""
    if dist.learners > 1 or dist.overlap:
        return (f"{run} takes distributed.rollout_workers and shards; distributed.learners and overlap apply to "
                "kind: lm runs")
    if dist.shard_count > num_envs:
        return (f"distributed.shards={dist.shard_count} is more than {field}={num_envs}: each shard needs "
                f"{item}; lower distributed.shards or raise {field}")
    return None
