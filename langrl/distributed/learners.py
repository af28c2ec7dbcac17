"""Data-parallel learners on Ray Train: W processes run the same training loop on one batch.

`fit` starts a `ray.train.torch.TorchTrainer` of ``distributed.learners`` workers (gloo on CPU, NCCL on
GPU); each runs the kind's train function inside `langrl.run.parallel`'s group. Every learner samples
(`langrl.lm.collect.LocalCollector`) its own shards of the step's prompts (shard k on learner k mod W,
with shard k's random stream), the shards are all-gathered so every learner holds the whole batch, and
the update sums the learners' micro-batch gradients (`langrl.run.parallel`). Learner 0 writes the run
folder; the others compute and write nothing (`FollowerHarness`). The result is the single-process run
with ``distributed.shards = W``, up to the order of float additions in the gradient sum.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from langrl.config.distributed import DistributedConfig
from langrl.errors import LangrlError
from langrl.run import parallel
from langrl.run.harness import RunHarness
from langrl.run.io import read_jsonl

if TYPE_CHECKING:
    from langrl.lm.trainer import Run
    from langrl.run.callbacks import Callback
    from langrl.run.harness import TrainResult


class NullLogger:
    """The logger of a learner that writes nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class FollowerHarness:
    """The run harness of learners 1..W-1: the same steps and stop decisions as learner 0, no files."""

    writes = False
    run_dir = None

    def __init__(self, start: int):
        self.start = start
        self.stop_requested = False
        self.parts: Any = None

    @contextmanager
    def session(self, total: int, desc: str) -> Iterator[Any]:
        yield NullLogger()

    steps = RunHarness.steps  # the same steps, and the same stop after a requested one

    def log(self, logger: Any, step: int, metrics: dict[str, float]) -> None:
        pass

    def due(self, step: int, last: int) -> bool:
        return False

    def checkpoint(self, step: int, state: dict[str, Any]) -> None:
        pass

    def advance(self, **postfix: float) -> None:
        pass


def share_start(run: Run, start: int) -> int:
    """Learner 0's restored state (step, weights, optimizer, algorithm) on every learner: they start equal."""
    if parallel.current() is None:
        return start
    leader = parallel.current().rank == 0  # type: ignore[union-attr]
    mine: dict[str, Any] | None = {
        "start": start, "policy": run.policy.state_dict(), "optimizer": run.optimizer.state_dict(),
        "algorithm": run.algorithm.state_dict(),
        "modules": {k: m.state_dict() for k, m in run.algorithm.modules().items()},
    } if leader else None
    state = parallel.broadcast(mine)
    if not leader:
        run.policy.load_state_dict(state["policy"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.algorithm.load_state_dict(state["algorithm"])
        for name, module in run.algorithm.modules().items():
            module.load_state_dict(state["modules"][name])
    return int(state["start"])


def learner_loop(loop_config: dict[str, Any]) -> None:
    """One learner's process (a Ray Train worker): join the group, then run the kind's train function."""
    import ray.train

    context = ray.train.get_context()
    parallel.activate(context.get_world_rank(), context.get_world_size())
    torch.set_num_threads(loop_config["threads"])
    module, name = loop_config["train"].split(":")
    rank = context.get_world_rank()
    getattr(importlib.import_module(module), name)(
        loop_config["config"], output=loop_config["run_dir"], resume=loop_config["resume"],
        allow_config_change=loop_config["allow_config_change"],
        callbacks=loop_config["callbacks"] if rank == 0 else ())


def fit(train: str, config: dict[str, Any], dist: DistributedConfig, threads: int, run_dir: Path, resume: bool,
        allow_config_change: bool, callbacks: Sequence[Callback]) -> TrainResult:
    """Run ``train`` (``"module:function"``, the kind's train function) on ``dist.learners`` Ray Train
    workers; learner 0 writes ``run_dir``. Returns its result as the single-process train would."""
    from langrl.distributed.pool import connect, import_ray
    from langrl.report.lm import summarise_run
    from langrl.run.harness import TrainResult

    import_ray()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = connect(dist, dist.learners * dist.cpus_per_learner)
    storage = tempfile.mkdtemp(prefix="langrl-learners-")
    loop_config = {"train": train, "config": config, "run_dir": str(run_dir), "resume": resume,
                   "allow_config_change": allow_config_change, "callbacks": list(callbacks), "threads": threads}
    scaling = ScalingConfig(num_workers=dist.learners, use_gpu=dist.gpus_per_learner > 0,
                            resources_per_worker={"CPU": dist.cpus_per_learner, "GPU": dist.gpus_per_learner})
    trainer = TorchTrainer(learner_loop, train_loop_config=loop_config, scaling_config=scaling,
                           run_config=RunConfig(storage_path=storage, name="learners"))
    try:
        trainer.fit()
    except Exception as e:  # Ray Train wraps the learners' errors; show the first line of the cause
        raise LangrlError(f"the data-parallel learners failed: {first_line(e)}") from e
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started:
            import_ray().shutdown()
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return TrainResult(run_dir=run_dir, metrics=rows[-1] if rows else {}, summary=summarise_run(run_dir))


def first_line(error: BaseException) -> str:
    """The innermost cause's message, one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
