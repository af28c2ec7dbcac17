"""The run harness: what every training loop does around its steps, written once.

    harness = RunHarness(run_dir, config, parts)          # parts: what a checkpoint holds
    state = harness.restore() if resume else {}           # newest checkpoint -> parts; its trainer state
    with harness.session(total=steps, desc="train") as logger:
        for step in range(harness.start + 1, steps + 1):
            ...; logger.log_metrics(step, metrics); harness.advance(reward=...)
            if harness.due(step, steps): harness.checkpoint(step, state)
    harness.report()

It resolves nothing about algorithms: the loop decides what a step is, the harness keeps the run folder
(``config.yaml``, ``metrics.jsonl`` + TensorBoard, ``samples.jsonl``, ``checkpoints/step-N``, the
report) consistent, so a run stopped anywhere and resumed logs what the uninterrupted run logs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.config.base import LogConfig, config_to_yaml
from langrl.errors import ConfigError
from langrl.run.checkpoint import list_checkpoints, load_checkpoint, load_objects, save_checkpoint
from langrl.run.io import atomic_write_text
from langrl.run.logger import RunLogger


@dataclass
class TrainResult:
    """What ``train`` returns for every kind of run: where the run lives and how it ended."""

    run_dir: Path
    metrics: dict[str, float]
    summary: dict[str, Any]


@dataclass
class Checkpointed:
    """What a checkpoint of a run holds: the policy (and tokenizer), the optimizer, extra modules (value
    heads, critics, proposals: safetensors) and picklable objects (environments mid-episode)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    modules: dict[str, nn.Module] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)


def resolve_run_dir(name: str, output: str | Path | None, resume: bool) -> Path:
    """The run folder: ``output``, a new timestamped folder, or (resume) the newest earlier one."""
    if output is None:
        if resume:
            earlier = sorted(Path("runs").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
            if not earlier:
                raise ConfigError(f"--resume: no earlier run of {name!r} under runs/; pass --output DIR")
            return earlier[-1]
        return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(output)
    if not resume and ((run_dir / "metrics.jsonl").exists() or list_checkpoints(run_dir)):
        raise ConfigError(f"--output {str(run_dir)!r} already holds a run; pass --resume to continue it "
                          f"or choose another folder")
    return run_dir


def run_name(config: Any, default: str) -> str:
    """A run's name: the config file's stem, else ``default``."""
    return Path(config).stem if isinstance(config, (str, Path)) else default


class RunHarness:
    """Run folder, checkpoints and resume, logger and progress bar of one training run."""

    def __init__(self, run_dir: Path, config: BaseModel, log: LogConfig, parts: Checkpointed):
        self.run_dir, self.config, self.log, self.parts = Path(run_dir), config, log, parts
        self.start = 0
        self.bar: Any = None

    def restore(self) -> dict[str, Any]:
        """Load the newest checkpoint into ``parts``; return its trainer state ({} when there is none)."""
        checkpoints = list_checkpoints(self.run_dir)
        if not checkpoints:
            return {}
        p = self.parts
        state = load_checkpoint(checkpoints[-1], p.model, p.optimizer, p.modules)
        p.objects.update(load_objects(checkpoints[-1], list(p.objects)))
        self.start = int(state["step"])
        return state

    @contextmanager
    def session(self, total: int, desc: str) -> Iterator[RunLogger]:
        """Write ``config.yaml``, open the logger at the restored step and the progress bar."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", config_to_yaml(self.config))
        self.bar = tqdm(total=total, initial=self.start, desc=desc, disable=not self.log.progress,
                        dynamic_ncols=True)
        try:
            with RunLogger(self.run_dir, start_step=self.start, tensorboard=self.log.tensorboard) as logger:
                yield logger
        finally:
            self.bar.close()

    def advance(self, **postfix: float) -> None:
        """One step done: move the progress bar and show the headline metrics."""
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()})
        self.bar.update(1)

    def due(self, step: int, last: int) -> bool:
        """Whether ``step`` gets a checkpoint: every ``log.checkpoint_every`` steps and the last one."""
        return step % self.log.checkpoint_every == 0 or step == last

    def checkpoint(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``checkpoints/step-{step}`` (atomically) with the trainer ``state``."""
        p = self.parts
        return save_checkpoint(self.run_dir, step, p.model, p.tokenizer, p.optimizer, state,
                               self.log.keep_checkpoints, p.modules, p.objects)
