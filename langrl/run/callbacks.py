"""Callbacks: user code the run harness calls at fixed points of every kind of run.

    class Printer(Callback):
        def on_step_end(self, step, metrics):
            print(step, metrics.get("reward/mean"))

    langrl.train("configs/toy_exact.yaml", callbacks=[Printer(), EarlyStopping("bayes/kl_to_optimum",
                                                                              mode="min", patience=10)])

The harness calls ``on_step_end`` after a step's metrics are logged (metrics.jsonl written), with every
metric the step logged, evaluations included; before it, ``on_evaluate`` with the ``eval/*`` metrics of a
step that evaluated (held-out prompts, episodes or seeds, as each kind of run evaluates);
``on_checkpoint`` after a checkpoint is complete; ``on_train_end`` once, when the loop ends (stopped
early or not). A callback asks the run to stop by returning True from ``on_step_end``: the step it saw is
then checkpointed and the loop ends, so an early stop loses nothing and ``--resume`` with more ``steps``
continues from there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal


class Callback:
    """Override any of these; the defaults do nothing."""

    def on_step_end(self, step: int, metrics: dict[str, float]) -> bool | None:
        """After step ``step`` was logged; return True to stop the run after checkpointing this step."""
        return None

    def on_evaluate(self, step: int, metrics: dict[str, float]) -> None:
        """After step ``step`` logged an evaluation: its ``eval/*`` metrics."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After ``checkpoints/step-{step}`` was written completely."""

    def on_train_end(self, step: int, stopped_early: bool) -> None:
        """When the loop ends at ``step``."""


class EarlyStopping(Callback):
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` logged values
    (steps that do not log it are not counted), as Keras' and SB3's early stopping do."""

    def __init__(self, metric: str, mode: Literal["min", "max"] = "max", patience: int = 10,
                 min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience = {patience}: must be at least 1")
        if mode not in ("min", "max"):
            raise ValueError(f"mode = {mode!r}: must be 'min' or 'max'")
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta
        self.best = math.inf if mode == "min" else -math.inf
        self.waited = 0

    def improved(self, value: float) -> bool:
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def on_step_end(self, step: int, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        if self.improved(value):
            self.best, self.waited = value, 0
            return False
        self.waited += 1
        return self.waited >= self.patience


class StopAtThreshold(Callback):
    """Stop as soon as ``metric`` reaches ``threshold`` (>= for mode max, <= for mode min): SB3's
    ``StopTrainingOnRewardThreshold``."""

    def __init__(self, metric: str, threshold: float, mode: Literal["min", "max"] = "max"):
        self.metric, self.threshold, self.mode = metric, threshold, mode

    def on_step_end(self, step: int, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        return value >= self.threshold if self.mode == "max" else value <= self.threshold


__all__ = ["Callback", "EarlyStopping", "StopAtThreshold"]
