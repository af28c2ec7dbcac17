"""Callbacks see every logged step of every kind of run, may stop it early (the stop step is checkpointed,
so --resume continues from there), and are told about checkpoints and the end of training."""

from __future__ import annotations

import json

import pytest

import langrl
from langrl.run.callbacks import Callback, EarlyStopping, StopAtThreshold


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None):
        self.steps: list[int] = []
        self.evaluations: list[tuple[int, list[str]]] = []
        self.checkpoints: list[int] = []
        self.ended: tuple[int, bool] | None = None
        self.stop_at = stop_at

    def on_step_end(self, step, metrics):
        assert "reward/mean" in metrics
        self.steps.append(step)
        return step == self.stop_at

    def on_evaluate(self, step, metrics):
        self.evaluations.append((step, sorted(metrics)))

    def on_checkpoint(self, step, path):
        assert (path / "COMPLETE").exists()
        self.checkpoints.append(step)

    def on_train_end(self, step, stopped_early):
        self.ended = (step, stopped_early)


def toy(steps: int) -> list[str]:
    return [f"steps={steps}", "log.tensorboard=false", "log.checkpoint_every=100", "bayes.exact=false",
            "bayes.estimates=false", "prompts.per_step=2", "sampling.group_size=4"]


def test_a_callback_stops_the_run_and_the_stop_step_is_checkpointed(tmp_path):
    rec = Recorder(stop_at=2)
    result = langrl.train("configs/toy_exact.yaml", output=tmp_path / "run", overrides=toy(5), callbacks=[rec])
    assert rec.steps == [1, 2] and rec.checkpoints == [2] and rec.ended == (2, True)
    assert rec.evaluations == []  # no eval.every: no evaluation during training
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 2
    # resuming continues after the stop step, to the configured end
    rec2 = Recorder()
    langrl.train("configs/toy_exact.yaml", output=tmp_path / "run", resume=True, overrides=toy(5), callbacks=[rec2])
    assert rec2.steps == [3, 4, 5] and rec2.ended == (5, False)


def test_early_stopping_counts_logged_values_without_improvement():
    stop = EarlyStopping("loss", mode="min", patience=2)
    seen = [stop.on_step_end(i, {"loss": v}) for i, v in enumerate([3.0, 2.0, 2.5, 2.0, 1.0, 1.5, 1.2])]
    assert seen == [False, False, False, True, False, False, True]
    assert stop.on_step_end(8, {"other": 1.0}) is False  # steps without the metric are not counted
    with pytest.raises(ValueError, match="patience = 0"):
        EarlyStopping("loss", patience=0)


def test_stop_at_threshold():
    stop = StopAtThreshold("eval/mean_return", 475.0)
    assert not stop.on_step_end(1, {"eval/mean_return": 400.0}) and stop.on_step_end(2, {"eval/mean_return": 480.0})
    assert not stop.on_step_end(3, {"eval/mean_return": float("nan")})


def test_evaluations_during_training_reach_on_evaluate(tmp_path):
    rec = Recorder()
    langrl.train("configs/toy_exact.yaml", output=tmp_path / "run", overrides=[*toy(3), "eval.every=2"],
                 callbacks=[rec])
    assert rec.evaluations == [(2, ["eval/kl", "eval/reward"]), (3, ["eval/kl", "eval/reward"])]

