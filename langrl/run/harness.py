"""The run harness: what every training loop does around its steps, written once.

    with RunHarness(run_dir, config, log, parts, callbacks=callbacks) as harness:  # locks, cleans crashes
        state = harness.restore() if resume else {}              # newest intact checkpoint -> parts
        with harness.session(total=steps, desc="train") as logger:
            for step in harness.steps(steps):                   # ends early when a callback asks
                metrics = ...; harness.log(logger, step, metrics)     # non-finite core metrics stop here
                if harness.due(step, steps): harness.checkpoint(step, state)

It knows nothing about algorithms: the loop decides what a step is; the harness keeps the run folder
(``config.yaml``, ``metrics.jsonl`` + TensorBoard, ``samples.jsonl``, ``checkpoints/step-N``) consistent,
so that a run stopped anywhere and resumed logs what the uninterrupted run logs, one process writes a
folder at a time, and a resume never silently mixes configurations.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import torch
import yaml
from pydantic import BaseModel
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.config.base import LogConfig, config_to_yaml
from langrl.errors import CheckpointError, ConfigError, LangrlError, NonFiniteError
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import (
    clean_stale,
    finite_parameters,
    list_checkpoints,
    load_checkpoint,
    load_objects,
    save_checkpoint,
)
from langrl.run.io import append_jsonl, atomic_write_json, atomic_write_text
from langrl.run.lock import LOCK_FILE, RunLock
from langrl.run.logger import RunLogger

log = logging.getLogger("langrl")

RUN_MARKER = ".langrl-run"  # {"created": unix time, "name": ...}: what makes a folder a langrl run
TIMESTAMP = "%Y%m%d-%H%M%S"
# Metrics whose non-finite value means the run diverged (others, e.g. importance-sampling estimates, may
# legitimately be infinite).
CORE_METRICS = re.compile(r"^(loss/|grad/|reward/|kl/ref$|entropy$|value/|rollout/reward)")
# Config keys that may change when a run is resumed: more steps, and how it logs.
SAFE_CHANGES = re.compile(r"^(log\.|threads$)")
UPWARD_CHANGES = ("steps", "ppo.env_steps")


@dataclass
class TrainResult:
    """What ``train`` returns for every kind of run: where the run lives and how it ended."""

    run_dir: Path
    metrics: dict[str, float]
    summary: dict[str, Any]


@dataclass
class Checkpointed:
    """What a checkpoint of a run holds: the policy LM (and tokenizer), the optimizer, extra modules (value
    heads, critics, Q-networks: safetensors) and picklable objects (environments mid-episode, Q-tables).
    A run without an LM or without an optimizer leaves those None."""

    model: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase | None
    optimizer: torch.optim.Optimizer | None
    modules: dict[str, nn.Module] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- folders

T = TypeVar("T")


def guarded_step(step: int, run_step: Callable[..., T], *args: Any, fix: str = "lower optim.lr") -> T:
    """``run_step(*args)``; a `NonFiniteError` is raised again naming ``step``, saying that nothing of it was
    kept (the harness logs and checkpoints only after a step returns) and what to change (``fix``)."""
    try:
        return run_step(*args)
    except NonFiniteError as e:
        raise NonFiniteError(f"step {step}: {e}; nothing of this step was logged or checkpointed (the last "
                             f"checkpoint is intact): {fix}") from None


def is_run(folder: Path) -> bool:
    """A folder a langrl run wrote (its marker, or the files runs wrote before the marker existed)."""
    return (folder / RUN_MARKER).exists() or (folder / "metrics.jsonl").exists() or bool(list_checkpoints(folder))


def run_created(folder: Path) -> float:
    """When a run started: its marker's time, else the timestamp in its name, else the folder's mtime."""
    try:
        return float(json.loads((folder / RUN_MARKER).read_text())["created"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    match = re.search(r"(\d{8}-\d{6})(?:-\d+)?$", folder.name)
    if match:
        return time.mktime(time.strptime(match.group(1), TIMESTAMP))
    return folder.stat().st_mtime


def resolve_run_dir(name: str, output: str | Path | None, resume: bool) -> Path:
    """The run folder: ``output``, a new ``runs/<name>-<timestamp>``, or (resume) the newest earlier run."""
    if output is None:
        if resume:
            earlier = [p for p in Path("runs").glob(f"{name}-*") if p.is_dir() and is_run(p)]
            if not earlier:
                raise ConfigError(f"--resume: no earlier run of {name!r} under runs/; pass --output DIR")
            return max(earlier, key=run_created)
        base = Path("runs") / f"{name}-{time.strftime(TIMESTAMP)}"
        run_dir, n = base, 1
        while run_dir.exists():  # two runs started within one second
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
        return run_dir
    return check_output(Path(output), resume)


def check_output(run_dir: Path, resume: bool) -> Path:
    """``--output``: resuming needs a run there; a new run needs an empty (or missing) folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--output {str(run_dir)!r} is a file, not a folder; choose a folder")
    if resume:
        if not run_dir.is_dir() or not is_run(run_dir):
            raise ConfigError(f"--resume --output {str(run_dir)!r}: no langrl run there to continue; check the "
                              f"path, or drop --resume to start a new run")
        return run_dir
    if run_dir.is_dir() and is_run(run_dir):
        raise ConfigError(f"--output {str(run_dir)!r} already holds a run; pass --resume to continue it "
                          f"or choose another folder")
    if run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        shown = ", ".join(sorted(p.name for p in run_dir.iterdir())[:5])
        raise ConfigError(f"--output {str(run_dir)!r} is not empty and not a langrl run ({shown}); langrl will "
                          f"not write into it: choose a new or empty folder")
    return run_dir


def run_name(config: Any, default: str) -> str:
    """A run's name: the config file's stem, else ``default``."""
    return Path(config).stem if isinstance(config, (str, Path)) else default


# ---------------------------------------------------------------------------------------------- configs

def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    if not isinstance(data, Mapping):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out if out else {prefix.rstrip("."): data}


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The keys whose values differ, as (saved, new)."""
    a, b = flatten(saved), flatten(new)
    return {k.rstrip("."): (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def unsafe_changes(changes: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """The changes that alter what a resumed run computes: all but log settings and more steps."""
    def safe(key: str, old: Any, new: Any) -> bool:
        if SAFE_CHANGES.match(key):
            return True
        return key in UPWARD_CHANGES and isinstance(old, int) and isinstance(new, int) and new >= old

    return {k: v for k, v in changes.items() if not safe(k, *v)}


def describe(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


# ---------------------------------------------------------------------------------------------- harness

class RunHarness:
    """Run folder, lock, checkpoints and resume, logger and progress bar of one training run.

    ``allow_config_change``: a resumed run may differ from its saved ``config.yaml`` beyond the safe keys
    (``steps`` upward, ``log.*``); the change and its step go to ``config_changes.jsonl``.
    """

    writes = True  # the run folder is this harness's (a data-parallel follower's harness writes nothing)

    def __init__(self, run_dir: Path, config: BaseModel, log_config: LogConfig, parts: Checkpointed,
                 allow_config_change: bool = False, callbacks: Sequence[Callback] = ()):
        self.run_dir, self.config, self.log_config, self.parts = Path(run_dir), config, log_config, parts
        self.allow_config_change = allow_config_change
        self.callbacks = list(callbacks)
        self.stop_requested = False
        self.last_step = 0
        self.start = 0
        self.bar: Any = None
        self.lock = RunLock(self.run_dir)
        self.changes: dict[str, tuple[Any, Any]] = {}

    def __enter__(self) -> RunHarness:
        self.lock.__enter__()
        for path in clean_stale(self.run_dir):
            log.warning("removed %s, left by a writer that crashed", path)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.lock.__exit__(exc_type, exc, tb)

    def restore(self) -> dict[str, Any]:
        """Check the config against the saved one, then load the newest intact checkpoint into ``parts``
        (falling back to older ones with a warning); return its trainer state ({} when there is none)."""
        self.check_config()
        failures = []
        for path in reversed(list_checkpoints(self.run_dir)):
            try:
                state = load_checkpoint(path, self.parts.model, self.parts.optimizer, self.parts.modules)
                self.parts.objects.update(load_objects(path, list(self.parts.objects)))
            except CheckpointError as e:
                log.warning("%s; trying the checkpoint before it", e)
                failures.append(str(e))
                continue
            self.start = int(state["step"])
            return state
        if failures:
            raise CheckpointError(f"no intact checkpoint in {self.run_dir / 'checkpoints'}: {failures[-1]}")
        return {}

    def check_config(self) -> None:
        """Refuse a resume whose config differs from the saved one in what the run computes."""
        saved_path = self.run_dir / "config.yaml"
        if not saved_path.exists():
            return
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
        changes = config_changes(saved, self.config.model_dump(mode="json"))
        unsafe = unsafe_changes(changes)
        if unsafe and not self.allow_config_change:
            raise ConfigError(f"--resume would change the run's saved config: {describe(unsafe)}. Only steps "
                              f"(upward) and log.* may change mid-run; pass --allow-config-change to change "
                              f"the rest anyway (recorded in config_changes.jsonl)")
        self.changes = changes

    @contextmanager
    def session(self, total: int, desc: str) -> Iterator[RunLogger]:
        """Write the marker and ``config.yaml``, record config changes, open the logger at the restored step
        and the progress bar."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / RUN_MARKER).exists():
            atomic_write_json(self.run_dir / RUN_MARKER, {"created": time.time(), "name": self.run_dir.name})
        if self.changes:
            append_jsonl(self.run_dir / "config_changes.jsonl",
                         {"step": self.start, "changes": {k: list(v) for k, v in self.changes.items()}})
        atomic_write_text(self.run_dir / "config.yaml", config_to_yaml(self.config))
        self.last_step = self.start
        self.bar = tqdm(total=total, initial=self.start, desc=desc, disable=not self.log_config.progress,
                        dynamic_ncols=True)
        try:
            with RunLogger(self.run_dir, start_step=self.start, report_to=self.log_config.report_to,
                           config=self.config.model_dump(mode="json"), wandb_mode=self.log_config.wandb_mode) as logger:
                yield logger
        finally:
            self.bar.close()
        for callback in self.callbacks:  # only after a loop that ended without an error
            callback.on_train_end(self.last_step, self.stop_requested)

    def steps(self, last: int) -> Iterator[int]:
        """The steps still to run, ``start + 1 .. last``; ends after a step a callback asked to stop at."""
        for step in range(self.start + 1, last + 1):
            yield step
            if self.stop_requested:
                return

    def log(self, logger: RunLogger, step: int, metrics: dict[str, float]) -> None:
        """Log one step's metrics, after checking the core ones are finite (else stop the run); then the
        callbacks' ``on_step_end``."""
        bad = {k: v for k, v in metrics.items() if CORE_METRICS.match(k) and not math.isfinite(v)}
        if bad:
            raise NonFiniteError(f"step {step}: {describe_values(bad)} is not finite; the step was not logged "
                                 f"or checkpointed (the last checkpoint is intact): lower optim.lr or check "
                                 f"the reward")
        logger.log_metrics(step, metrics)
        self.last_step = step
        evaluation = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        for callback in self.callbacks:
            if evaluation:
                callback.on_evaluate(step, dict(evaluation))
            if callback.on_step_end(step, dict(metrics)):
                if not self.stop_requested:
                    log.warning("step %d: %s asked to stop the run", step, type(callback).__name__)
                self.stop_requested = True

    def advance(self, **postfix: float) -> None:
        """One step done: move the progress bar and show the headline metrics."""
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()})
        self.bar.update(1)

    def due(self, step: int, last: int) -> bool:
        """Whether ``step`` gets a checkpoint: every ``log.checkpoint_every`` steps, the last one, and one
        a callback stopped the run at."""
        return step % self.log_config.checkpoint_every == 0 or step == last or self.stop_requested

    def checkpoint(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``checkpoints/step-{step}`` (atomically) with the trainer ``state``; never non-finite
        weights, and a full disk is a clear error with the previous checkpoints intact."""
        p = self.parts
        params = [] if p.model is None else [q for q in p.model.parameters() if q.requires_grad]
        params += [q for m in p.modules.values() for q in m.parameters() if q.requires_grad]
        if not finite_parameters(params):
            raise NonFiniteError(f"step {step}: the weights are not finite; not checkpointed (the last "
                                 f"checkpoint is intact): lower optim.lr")
        try:
            path = save_checkpoint(self.run_dir, step, p.model, p.tokenizer, p.optimizer, state,
                                   self.log_config.keep_checkpoints, p.modules, p.objects)
        except Exception as e:  # safetensors reports a full disk as its own error type, with the OS's text
            if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
                raise LangrlError(f"step {step}: no space left on the device of {self.run_dir} while writing a "
                                  f"checkpoint (nothing half-written is kept); free space or lower "
                                  f"log.keep_checkpoints, then --resume") from None
            raise
        for callback in self.callbacks:
            callback.on_checkpoint(step, path)
        return path


def describe_values(values: dict[str, float]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in values.items())
