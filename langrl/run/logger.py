"""One thin logger per run: JSON Lines files that a report can read, plus live trackers (TensorBoard,
Weights & Biases, MLflow) that get every logged step.

Files in the run folder:

* ``metrics.jsonl``: one row per ``log_metrics`` call, ``{"step": 12, "reward/mean": 0.4, ...}``;
* ``samples.jsonl``: one row per sampled completion, ``{"step", "prompt", "completion", "reward"}``;
* ``eval_samples.jsonl``: held-out completions before and after training, ``{"phase", "step", ...}``;
* ``tb/``: TensorBoard event files (``report_to: [tensorboard]``), with tables of samples;
* ``wandb/``: W&B's files (``report_to: [wandb]``; ``$WANDB_DIR`` moves them), ``mlflow.db``: the default
  MLflow store (``report_to: [mlflow]``, when ``$MLFLOW_TRACKING_URI`` is unset);
* ``trackers.json``: the W&B and MLflow run ids, so that a resumed run continues the same tracker runs.

Keys are stable namespaced strings (``reward/mean``, ``kl/ref``, ``loss/policy``, ``time/step_s``,
``samples/per_s``) so that reports, dashboards and comparisons across algorithms line up.

The JSON files are the source of truth; trackers are a convenience and can be switched off (TensorBoard
costs an import of ~1 s and a background writer thread; W&B and MLflow more, see `open_tracker`). A tracker
that fails mid-run is dropped with a warning rather than stopping the run: ``metrics.jsonl`` keeps every
step. W&B and MLflow get metrics only (and, at the start, the run's config); samples go to the JSON files
and TensorBoard.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from langrl.errors import ConfigError
from langrl.report.common import md_cell
from langrl.run.io import append_jsonl, append_jsonl_rows, atomic_write_json, atomic_write_jsonl, read_jsonl

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TRACKERS", "RunLogger", "Tracker", "open_tracker"]

log = logging.getLogger("langrl")

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
EVAL_SAMPLES_FILE = "eval_samples.jsonl"
TB_DIR = "tb"
TRACKERS_FILE = "trackers.json"
MLFLOW_DB = "mlflow.db"
TRACKERS = ("tensorboard", "wandb", "mlflow")
TRACKER_EXTRA = "pip install 'langrl[trackers]'"
# MLflow's limits: at most 100 params per batch call, values of at most 6000 characters.
MLFLOW_PARAM_BATCH = 100
MLFLOW_PARAM_CHARS = 6000
EVAL_PHASES = ("before", "after")
# How many samples go into the TensorBoard text table per step; the JSON file keeps them all.
TB_TEXT_ROWS = 4
TB_TEXT_CHARS = 300


def _to_float(value: Any, name: str) -> float:
    """Turn a Python/numpy/torch scalar into a plain float; ``.item()`` also moves a CUDA scalar to host."""
    try:
        if hasattr(value, "item"):
            value = value.item()
        return float(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a real scalar, got {type(value).__name__}: {value!r}") from e


def _json_number(x: float) -> float | None:
    """JSON has no NaN/Infinity; write null so every JSON reader (not only Python's) can read the file."""
    return x if math.isfinite(x) else None


def _check_lengths(prompts: Sequence[str], completions: Sequence[str], rewards: Sequence[Any]) -> None:
    if not len(prompts) == len(completions) == len(rewards):
        raise ValueError(
            f"prompts, completions and rewards must have equal lengths, got "
            f"{len(prompts)}, {len(completions)} and {len(rewards)}"
        )


def _sample_rows(
    step: int, prompts: Sequence[str], completions: Sequence[str], rewards: Sequence[Any]
) -> list[dict[str, Any]]:
    _check_lengths(prompts, completions, rewards)
    if hasattr(rewards, "tolist"):  # a tensor or array: one host transfer, not one per element
        rewards = rewards.tolist()
    return [
        {"step": step, "prompt": str(p), "completion": str(c), "reward": _json_number(_to_float(r, "reward"))}
        for p, c, r in zip(prompts, completions, rewards, strict=True)
    ]


def _truncate_after(path: Path, start_step: int) -> None:
    """Drop rows logged after ``start_step``, and any crash-truncated last line, from a JSON Lines log.

    Those rows belong to the part of the interrupted run after its last checkpoint; the resumed run logs
    those steps again, and keeping both would double them. The file is rewritten only when needed, since
    ``samples.jsonl`` can be large.
    """
    if not path.exists():
        return
    rows = read_jsonl(path)
    kept = [r for r in rows if not isinstance(r.get("step"), (int, float)) or r["step"] <= start_step]
    ends_clean = path.stat().st_size == 0 or path.read_bytes()[-1:] == b"\n"
    if len(kept) != len(rows) or not ends_clean:
        atomic_write_jsonl(path, kept)


# ---------------------------------------------------------------------------------------------- trackers

class Tracker(Protocol):
    """A live tracker beside ``metrics.jsonl``: gets each logged step, is closed once at the end. ``state``
    (its run id) goes to ``trackers.json`` for a resumed run to continue."""

    name: str
    state: dict[str, str]

    def log(self, step: int, values: Mapping[str, float]) -> None: ...

    def close(self, status: str) -> None:
        """``status``: ``finished``, ``failed`` (an exception ended the run) or ``killed`` (interrupted)."""


def _import_tracker(name: str, module: str) -> Any:
    """Import a tracker's package; a missing one is a one-line `ConfigError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = e.name == module
        why = f"the {module} package is not installed" if missing else f"importing {module} failed ({e})"
        raise ConfigError(f"log.report_to includes {name!r} but {why}: {TRACKER_EXTRA}, "
                          f"or remove {name!r} from log.report_to") from None


def _flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"kl": {"coef": 0.1}}`` -> ``{"kl.coef": "0.1"}``: MLflow params are flat strings (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text if len(text) <= MLFLOW_PARAM_CHARS else text[:MLFLOW_PARAM_CHARS - 3] + "..."
    return out


class WandbTracker:
    """Weights & Biases: one W&B run per langrl run, named after the run folder.

    Project ``$WANDB_PROJECT`` or ``langrl``; mode ``$WANDB_MODE`` or ``log.wandb_mode`` (``offline`` by
    default: nothing leaves the machine until ``wandb sync``); files under ``$WANDB_DIR`` or the run folder.
    A resumed run reuses the stored id (``resume="allow"``): W&B keeps the values it already has for the
    steps the resumed run logs again (those the interrupted run logged after its last checkpoint).
    """

    name = "wandb"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], mode: str, run_id: str | None) -> None:
        wandb = _import_tracker(self.name, "wandb")
        kwargs: dict[str, Any] = {}
        if not os.environ.get("WANDB_DIR"):
            kwargs["dir"] = str(run_dir)
        # create_new: several langrl runs in one process (a sweep, the tests) must not finish each other's runs.
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "langrl", name=run_dir.name, id=run_id,
                              resume="allow", config=dict(config), allow_val_change=True,
                              mode=os.environ.get("WANDB_MODE") or mode, reinit="create_new", **kwargs)
        self.state = {"id": str(self.run.id)}

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


class MlflowTracker:
    """MLflow: one MLflow run per langrl run, named after the run folder, with the flattened config as params.

    Tracking URI ``$MLFLOW_TRACKING_URI``, else ``sqlite:///RUN/mlflow.db`` (MLflow 3 refuses new ``file:``
    stores; see it with ``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``); experiment
    ``$MLFLOW_EXPERIMENT_NAME`` or ``langrl``. A resumed run continues the stored run id on the same URI;
    params are immutable in MLflow, so only keys the run lacks are added (``config_changes.jsonl`` records
    changed values), and the steps the resumed run logs again get a second value at the same step.
    """

    name = "mlflow"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], run_id: str | None, uri: str | None) -> None:
        _import_tracker(self.name, "mlflow")
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric, self._param = Metric, Param
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}"
        self.client = MlflowClient(tracking_uri=self.uri)
        logged: dict[str, str] = {}
        if uri != self.uri:  # MLFLOW_TRACKING_URI changed since the run started: its id means nothing here
            run_id = None
        if run_id is not None:
            try:
                logged = dict(self.client.get_run(run_id).data.params)
                self.client.update_run(run_id, status="RUNNING")
            except Exception:  # deleted, or another store: start a new run
                run_id = None
        if run_id is None:
            run_id = self.client.create_run(self._experiment(), run_name=run_dir.name,
                                            tags={"langrl.run_dir": str(run_dir.resolve())}).info.run_id
        self.run_id = str(run_id)
        params = [Param(k, v) for k, v in _flat_params(config).items() if k not in logged]
        for i in range(0, len(params), MLFLOW_PARAM_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MLFLOW_PARAM_BATCH])
        self.state = {"run_id": self.run_id, "tracking_uri": self.uri}

    def _experiment(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "langrl"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except Exception:  # another process created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, v, now, step) for k, v in values.items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status.upper())


def open_tracker(name: str, run_dir: Path, start_step: int, config: Mapping[str, Any], wandb_mode: str,
                 state: Mapping[str, Any]) -> Tracker:
    """Start (or, for a resumed run, ``start_step > 0``, continue) the tracker ``name`` (wandb or mlflow).

    ``state`` is what the tracker stored in ``trackers.json`` earlier. Importing wandb takes ~1.5 s and
    starts a service process; importing mlflow ~5 s, and a new sqlite store runs MLflow's schema migrations
    (seconds) once per run folder.
    """
    resumed = dict(state) if start_step > 0 else {}
    if name == "wandb":
        return WandbTracker(run_dir, config, wandb_mode, resumed.get("id"))
    if name == "mlflow":
        return MlflowTracker(run_dir, config, resumed.get("run_id"), resumed.get("tracking_uri"))
    raise ValueError(f"unknown tracker {name!r}; allowed: {', '.join(TRACKERS)}")


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _trackers_to_use(report_to: Sequence[str] | None, tensorboard: bool | None) -> list[str]:
    """``report_to`` (default: tensorboard alone); ``tensorboard`` True adds it, False removes it."""
    names = list(dict.fromkeys(["tensorboard"] if report_to is None else report_to))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown tracker(s) {unknown}; allowed: {', '.join(TRACKERS)}")
    if tensorboard is True and "tensorboard" not in names:
        names.append("tensorboard")
    elif tensorboard is False:
        names = [n for n in names if n != "tensorboard"]
    return names


class RunLogger:
    """Writes the metrics and samples of one run into ``run_dir`` and forwards each step to the trackers.

    Args:
        run_dir: the run folder; created if missing.
        start_step: the step of the checkpoint a resumed run starts from (0 for a fresh run). Rows of
            ``metrics.jsonl`` and ``samples.jsonl`` with ``step > start_step`` are dropped, and TensorBoard
            purges its events from ``start_step + 1`` on, so a resumed run's logs equal those of an
            uninterrupted run. With 0 this also clears a stale run left in the same folder. With
            ``start_step > 0`` W&B and MLflow continue the runs whose ids ``trackers.json`` holds.
        tensorboard: the older switch: True adds ``tensorboard`` to ``report_to``, False removes it.
        report_to: the trackers, among ``tensorboard``, ``wandb`` and ``mlflow`` (default: tensorboard).
        config: the run's config (nested): W&B's run config, MLflow's params (flattened, ``kl.coef``).
        wandb_mode: W&B's mode when ``$WANDB_MODE`` is unset.

    Use as a context manager, or call :meth:`close` at the end so the trackers' buffers reach disk.
    """

    def __init__(self, run_dir: Path, start_step: int = 0, tensorboard: bool | None = None, *,
                 report_to: Sequence[str] | None = None, config: Mapping[str, Any] | None = None,
                 wandb_mode: str = "offline") -> None:
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        names = _trackers_to_use(report_to, tensorboard)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.start_step = start_step
        self.metrics_path = self.run_dir / METRICS_FILE
        self.samples_path = self.run_dir / SAMPLES_FILE
        self.eval_samples_path = self.run_dir / EVAL_SAMPLES_FILE
        _truncate_after(self.metrics_path, start_step)
        _truncate_after(self.samples_path, start_step)
        self._writer: SummaryWriter | None = None
        self._trackers: list[Tracker] = []
        self._closed = False
        try:
            self._open_trackers(names, config or {}, wandb_mode)
        except BaseException:
            self.close(status="failed")
            raise

    def _open_trackers(self, names: list[str], config: Mapping[str, Any], wandb_mode: str) -> None:
        state_path = self.run_dir / TRACKERS_FILE
        state = _read_state(state_path)
        for name in names:
            if name == "tensorboard":
                # Imported here: tensorboard costs about a second to import and is optional for a run.
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops events with global_step >= purge_step that an interrupted run left behind.
                self._writer = SummaryWriter(log_dir=str(self.run_dir / TB_DIR), purge_step=self.start_step + 1)
            else:
                tracker = open_tracker(name, self.run_dir, self.start_step, config, wandb_mode,
                                       state.get(name) or {})
                self._trackers.append(tracker)
                state[name] = tracker.state
        if self._trackers:
            atomic_write_json(state_path, state)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"RunLogger for {self.run_dir} is closed")

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``{"step": step, **metrics}`` to ``metrics.jsonl`` and add each value to TensorBoard.

        Values may be Python, numpy or torch scalars; they are stored as plain floats. Non-finite values
        are stored as ``null`` in JSON (TensorBoard gets them as they are).
        """
        self._check_open()
        values: dict[str, float] = {}
        for key, value in metrics.items():
            if not isinstance(key, str) or key == "step":
                raise ValueError(f"metric keys must be strings other than 'step', got {key!r}")
            values[key] = _to_float(value, f"metric {key!r}")
        row = {"step": int(step), **{k: _json_number(v) for k, v in values.items()}}
        append_jsonl(self.metrics_path, row)
        if self._writer is not None:
            for key, v in values.items():
                self._writer.add_scalar(key, v, global_step=step)
            # Steps take seconds, so flushing each one costs nothing and a crash loses no curve points.
            self._writer.flush()
        for tracker in list(self._trackers):
            try:
                tracker.log(int(step), values)
            except Exception as e:  # a tracker's hiccup must not end a run whose metrics.jsonl is intact
                log.warning("%s failed at step %d (%s: %s); it gets no more steps of this run, metrics.jsonl "
                            "keeps them all", tracker.name, step, type(e).__name__, e)
                self._trackers.remove(tracker)
                self._close_tracker(tracker, "failed")

    def log_samples(
        self, step: int, prompts: Sequence[str], completions: Sequence[str], rewards: Sequence[Any]
    ) -> None:
        """Append one row per sample to ``samples.jsonl``; show a table of the first few in TensorBoard."""
        self._check_open()
        rows = _sample_rows(int(step), prompts, completions, rewards)
        append_jsonl_rows(self.samples_path, rows)
        if self._writer is not None and rows:
            self._writer.add_text("samples", self._markdown_table(rows), global_step=step)
            self._writer.flush()

    def log_eval_samples(
        self,
        phase: str,
        step: int,
        prompts: Sequence[str],
        completions: Sequence[str],
        rewards: Sequence[Any],
        kls: Sequence[float] | None = None,
        held_out: bool | None = None,
    ) -> None:
        """Record held-out completions for ``phase`` ("before" or "after" training) in ``eval_samples.jsonl``,
        with each completion's KL to the reference (``kls``) and whether its prompt was held out from training
        when the caller knows them.

        Rows of the same phase from an earlier call (e.g. an interrupted run's "before" pass, redone on
        resume) are replaced, so the report pairs exactly one set of "before" with one of "after".
        """
        self._check_open()
        if phase not in EVAL_PHASES:
            raise ValueError(f"phase must be one of {EVAL_PHASES}, got {phase!r}")
        new = [{"phase": phase, **row} for row in _sample_rows(int(step), prompts, completions, rewards)]
        if kls is not None:
            _check_lengths(prompts, completions, kls)
            for row, kl in zip(new, kls, strict=True):
                row["kl"] = _json_number(_to_float(kl, "kl"))
        if held_out is not None:
            for row in new:
                row["held_out"] = held_out
        old = read_jsonl(self.eval_samples_path, missing_ok=True)
        atomic_write_jsonl(self.eval_samples_path, [r for r in old if r.get("phase") != phase] + new)
        if self._writer is not None and new:
            self._writer.add_text(f"eval_samples/{phase}", self._markdown_table(new), global_step=step)
            self._writer.flush()

    @staticmethod
    def _markdown_table(rows: list[dict[str, Any]]) -> str:
        lines = ["| prompt | completion | reward |", "|---|---|---|"]
        for r in rows[:TB_TEXT_ROWS]:
            reward = "n/a" if r["reward"] is None else f"{r['reward']:.3f}"
            lines.append(
                f"| {md_cell(r['prompt'], TB_TEXT_CHARS)} | {md_cell(r['completion'], TB_TEXT_CHARS)} "
                f"| {reward} |"
            )
        if len(rows) > TB_TEXT_ROWS:
            lines.append(f"\n{len(rows) - TB_TEXT_ROWS} more in the JSON Lines file.")
        return "\n".join(lines)

    def close(self, status: str = "finished") -> None:
        """Flush and close the trackers; safe to call twice. The JSON files are already on disk.

        ``status`` (``finished``, ``failed``, ``killed``) is what W&B and MLflow record for the run.
        """
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        while self._trackers:
            self._close_tracker(self._trackers.pop(), status)

    @staticmethod
    def _close_tracker(tracker: Tracker, status: str) -> None:
        try:
            tracker.close(status)
        except Exception as e:  # closing is best effort: the run's own files are complete
            log.warning("closing %s failed (%s: %s)", tracker.name, type(e).__name__, e)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close("killed" if issubclass(exc_type, KeyboardInterrupt) else "failed")
