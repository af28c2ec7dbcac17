"""One thin logger per run: JSON Lines files that a report can read, plus TensorBoard for live curves.

Files in the run folder:

* ``metrics.jsonl``: one row per ``log_metrics`` call, ``{"step": 12, "reward/mean": 0.4, ...}``;
* ``samples.jsonl``: one row per sampled completion, ``{"step", "prompt", "completion", "reward"}``;
* ``eval_samples.jsonl``: held-out completions before and after training, ``{"phase", "step", ...}``;
* ``tb/``: TensorBoard event files.

Keys are stable namespaced strings (``reward/mean``, ``kl/ref``, ``loss/policy``, ``time/step_s``,
``samples/per_s``) so that reports, dashboards and comparisons across algorithms line up.

The JSON files are the source of truth; TensorBoard is a convenience and can be switched off (it costs an
import of ~1 s and a background writer thread).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from langrl.report.common import md_cell
from langrl.run.io import append_jsonl, append_jsonl_rows, atomic_write_jsonl, read_jsonl

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["RunLogger"]

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
EVAL_SAMPLES_FILE = "eval_samples.jsonl"
TB_DIR = "tb"
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


class RunLogger:
    """Writes the metrics and samples of one run into ``run_dir``.

    Args:
        run_dir: the run folder; created if missing.
        start_step: the step of the checkpoint a resumed run starts from (0 for a fresh run). Rows of
            ``metrics.jsonl`` and ``samples.jsonl`` with ``step > start_step`` are dropped, and TensorBoard
            purges its events from ``start_step + 1`` on, so a resumed run's logs equal those of an
            uninterrupted run. With 0 this also clears a stale run left in the same folder.
        tensorboard: also write TensorBoard events under ``run_dir / "tb"``.

    Use as a context manager, or call :meth:`close` at the end so TensorBoard's buffer reaches disk.
    """

    def __init__(self, run_dir: Path, start_step: int = 0, tensorboard: bool = True) -> None:
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.start_step = start_step
        self.metrics_path = self.run_dir / METRICS_FILE
        self.samples_path = self.run_dir / SAMPLES_FILE
        self.eval_samples_path = self.run_dir / EVAL_SAMPLES_FILE
        _truncate_after(self.metrics_path, start_step)
        _truncate_after(self.samples_path, start_step)
        self._writer: SummaryWriter | None = None
        if tensorboard:
            # Imported here: tensorboard costs about a second to import and is optional for a run.
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events with global_step >= purge_step that an interrupted run left behind.
            self._writer = SummaryWriter(log_dir=str(self.run_dir / TB_DIR), purge_step=start_step + 1)
        self._closed = False

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
    ) -> None:
        """Record held-out completions for ``phase`` ("before" or "after" training) in ``eval_samples.jsonl``.

        Rows of the same phase from an earlier call (e.g. an interrupted run's "before" pass, redone on
        resume) are replaced, so the report pairs exactly one set of "before" with one of "after".
        """
        self._check_open()
        if phase not in EVAL_PHASES:
            raise ValueError(f"phase must be one of {EVAL_PHASES}, got {phase!r}")
        new = [{"phase": phase, **row} for row in _sample_rows(int(step), prompts, completions, rewards)]
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

    def close(self) -> None:
        """Flush and close TensorBoard; safe to call twice. The JSON files are already on disk."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
