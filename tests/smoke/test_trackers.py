"""Trackers beside metrics.jsonl: W&B (offline) and MLflow (a local sqlite store) for real, no mocks.

W&B's offline run is read back from its ``run-<id>.wandb`` file: a LevelDB-style log (7-byte file header,
32 KiB blocks, each record a 7-byte header of CRC, length and type, then a protobuf ``Record``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from langrl.config.base import LogConfig
from langrl.errors import ConfigError
from langrl.run.io import read_jsonl
from langrl.run.logger import TRACKERS_FILE, RunLogger

CONFIG = {"kind": "lm", "steps": 4, "kl": {"coef": 0.05, "mode": "reward"}, "prompts": {"items": ["a", "b"]}}
BLOCK = 32 * 1024
FULL, LAST = 1, 4


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        kind = data[pos + 6]
        if left < 7 or kind == 0:  # the rest of a block is padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(path: Path) -> tuple[Any, dict[int, dict[str, Any]]]:
    """(the run record, {step: logged values}) of one offline run file."""
    run, history = None, {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[row["_step"]] = {k: v for k, v in row.items() if not k.startswith("_")}
    assert run is not None, f"{path} holds no run record"
    return run, history


def steps(first: int, last: int) -> list[tuple[int, dict[str, float]]]:
    return [(s, {"reward/mean": s / 4, "kl/ref": 0.1 * s}) for s in range(first, last + 1)]


def test_wandb_offline_run_holds_the_metrics_and_a_resume_continues_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    wandb_dir = tmp_path / "wandb-files"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    run_dir = tmp_path / "grpo-run"
    with RunLogger(run_dir, report_to=["wandb"], config=CONFIG) as logger:
        for step, metrics in steps(1, 3):
            logger.log_metrics(step, metrics)
    run_id = json.loads((run_dir / TRACKERS_FILE).read_text())["wandb"]["id"]
    # Resumed from the checkpoint at step 2: steps 3 and 4 are logged (again) into the same W&B run.
    with RunLogger(run_dir, start_step=2, report_to=["wandb"], config=CONFIG) as logger:
        for step, metrics in steps(3, 4):
            logger.log_metrics(step, metrics)

    files = sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    assert len(files) == 2, files
    (first, first_history), (second, second_history) = wandb_run(files[0]), wandb_run(files[1])
    assert first.run_id == second.run_id == run_id
    assert (first.project, first.display_name) == ("langrl", "grpo-run")
    config = {item.key: json.loads(item.value_json) for item in first.config.update}
    assert config["kl"] == CONFIG["kl"] and config["steps"] == 4
    assert first_history == {s: m for s, m in steps(1, 3)}
    assert second_history == {s: m for s, m in steps(3, 4)}
    assert not (run_dir / "tb").exists() and not (run_dir / "wandb").exists()  # WANDB_DIR moved W&B's files


def test_mlflow_local_store_holds_the_metrics_and_a_resume_continues_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run_dir = tmp_path / "ppo-run"
    with RunLogger(run_dir, report_to=["mlflow"], config=CONFIG) as logger:
        for step, metrics in steps(1, 3):
            logger.log_metrics(step, metrics)
        logger.log_metrics(3, {"bayes/log_z_is": math.inf})
    changed = {**CONFIG, "steps": 6, "log": {"report_to": ["mlflow"]}}
    with RunLogger(run_dir, start_step=2, report_to=["mlflow"], config=changed) as logger:
        for step, metrics in steps(3, 4):
            logger.log_metrics(step, metrics)

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("langrl")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "ppo-run" and run.info.status == "FINISHED"
    assert run.info.run_id == json.loads((run_dir / TRACKERS_FILE).read_text())["mlflow"]["run_id"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "reward/mean"))
    assert history == [(1, 0.25), (2, 0.5), (3, 0.75), (3, 0.75), (4, 1.0)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "kl/ref")] == [1, 2, 3, 3, 4]
    params = run.data.params
    # Flattened config; MLflow params never change, so the resumed run's steps=6 is not there, log.* is added.
    assert params["kl.coef"] == "0.05" and params["prompts.items"] == '["a", "b"]'
    assert params["steps"] == "4" and params["log.report_to"] == '["mlflow"]'
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_missing_tracker_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tracker: str) -> None:
    monkeypatch.setitem(sys.modules, tracker, None)  # what `import` sees when the package is not installed
    with pytest.raises(ConfigError) as error:
        RunLogger(tmp_path, report_to=["tensorboard", tracker])
    message = str(error.value)
    assert "\n" not in message
    assert f"log.report_to includes {tracker!r}" in message and "pip install 'langrl[trackers]'" in message
    assert not (tmp_path / TRACKERS_FILE).exists()


class BrokenTracker:
    name = "broken"
    state: dict[str, str] = {}

    def __init__(self) -> None:
        self.logged: list[int] = []
        self.closed: list[str] = []

    def log(self, step: int, values: Any) -> None:
        self.logged.append(step)
        if step == 2:
            raise ConnectionError("server went away")

    def close(self, status: str) -> None:
        self.closed.append(status)


def test_a_tracker_that_fails_mid_run_is_dropped_and_metrics_jsonl_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tracker = BrokenTracker()
    with RunLogger(tmp_path, report_to=[]) as logger:
        logger._trackers.append(tracker)
        for step, metrics in steps(1, 3):
            logger.log_metrics(step, metrics)
    assert tracker.logged == [1, 2] and tracker.closed == ["failed"]
    assert "broken failed at step 2" in caplog.text
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.parametrize(("given", "report_to"), [
    ({}, ["tensorboard"]),
    ({"tensorboard": True}, ["tensorboard"]),
    ({"tensorboard": False}, []),
    ({"report_to": "wandb"}, ["wandb"]),
    ({"report_to": ["wandb", "mlflow", "wandb"], "tensorboard": True}, ["wandb", "mlflow", "tensorboard"]),
    ({"report_to": ["tensorboard", "mlflow"], "tensorboard": False}, ["mlflow"]),
])
def test_log_tensorboard_folds_into_report_to(given: dict[str, Any], report_to: list[str]) -> None:
    config = LogConfig.model_validate(given)
    assert config.report_to == report_to
    assert config.tensorboard == ("tensorboard" in report_to)
    saved = config.model_dump(mode="json")
    assert "tensorboard" not in saved and LogConfig.model_validate(saved) == config


def test_unknown_tracker_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wanb"):
        LogConfig.model_validate({"report_to": ["wanb"]})
    with pytest.raises(ValueError, match="unknown tracker"):
        RunLogger(tmp_path, report_to=["neptune"])


def test_a_training_run_reports_to_wandb_and_its_resume_continues_the_same_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the run harness: log.report_to reaches the logger, and --resume continues the W&B run."""
    from langrl.api import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    config = {"model": "tiny", "algorithm": "rloo", "steps": 1,
              "prompts": {"items": ["hi", "yo"], "per_step": 1, "eval_count": 1},
              "sampling": {"max_new_tokens": 3, "group_size": 2}, "reward": {"type": "length", "target": 2},
              "log": {"checkpoint_every": 1, "progress": False, "report_to": ["wandb"]}}
    run_dir = train(config, output=tmp_path / "run").run_dir
    train({**config, "steps": 2}, output=run_dir, resume=True)

    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    assert len(files) == 2, files
    (first, first_history), (second, second_history) = wandb_run(files[0]), wandb_run(files[1])
    assert first.run_id == second.run_id and first.display_name == "run"
    rows = {r["step"]: r for r in read_jsonl(run_dir / "metrics.jsonl")}
    assert sorted(first_history) == [1] and sorted(second_history) == [2]
    assert second_history[2]["reward/mean"] == pytest.approx(rows[2]["reward/mean"])
    assert not (run_dir / "tb").exists()  # report_to without tensorboard: no event files
