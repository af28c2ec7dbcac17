"""Tier 2: a run loses nothing and hides nothing. Resume refuses to mix configurations, one process writes
a run folder, checkpoints are verified and fall back to the newest intact one, non-finite numbers stop a
step before anything is logged or checkpointed."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
import yaml

import langrl
from langrl.cli import main
from langrl.errors import CheckpointError, ConfigError, NonFiniteError
from langrl.run.checkpoint import MANIFEST, list_checkpoints
from langrl.run.harness import resolve_run_dir
from langrl.run.io import read_jsonl
from langrl.run.lock import RunLock


def without_times(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "samples/per_s"))}
            for r in read_jsonl(run / "metrics.jsonl")]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_resume_refuses_config_changes_unless_allowed_and_records_them(tmp_path, lm_config):
    run = tmp_path / "run"
    langrl.train(lm_config(steps=2), output=run)
    with pytest.raises(ConfigError, match=r"--resume would change the run's saved config: .*algorithm 'grpo' -> "
                                          r"'rloo'.*optim.lr 0.001 -> 0.5.*seed 0 -> 7"):
        langrl.train(lm_config(steps=3, algorithm="rloo", seed=7, optim__lr=0.5), output=run, resume=True)
    assert yaml.safe_load((run / "config.yaml").read_text())["algorithm"] == "grpo"  # untouched
    langrl.train(lm_config(steps=3, optim__lr=0.5), output=run, resume=True, allow_config_change=True)
    changes = read_jsonl(run / "config_changes.jsonl")
    assert changes == [{"step": 2, "changes": {"optim.lr": [0.001, 0.5], "steps": [2, 3]}}]
    with pytest.raises(ConfigError, match=r"steps 3 -> 2"):  # fewer steps is not a safe change
        langrl.train(lm_config(steps=2, optim__lr=0.5), output=run, resume=True)


def test_resume_restores_the_saved_config_without_the_original_overrides(tmp_path, lm_config):
    config = write_yaml(tmp_path / "c.yaml", lm_config(steps=2))
    run = tmp_path / "run"
    assert main(["train", str(config), "--output", str(run), "--set", "sampling.max_new_tokens=4"]) == 0
    # the original command's override is not repeated: the saved config (4 tokens) continues, more steps
    assert main(["train", str(config), "--output", str(run), "--resume", "--set", "steps=3"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["sampling"]["max_new_tokens"] == 4
    assert max(r["completion/length"] for r in read_jsonl(run / "metrics.jsonl")) <= 4
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]


def test_newest_run_by_its_own_timestamp_and_missing_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old, new = Path("runs/x-20250101-000000"), Path("runs/x-20260101-000000")
    for folder in (new, old):  # the older run is modified last
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("")
        time.sleep(0.01)
    assert resolve_run_dir("x", None, resume=True) == new
    with pytest.raises(ConfigError, match=r"--resume --output 'runs/typo': no langrl run there"):
        resolve_run_dir("x", "runs/typo", resume=True)
    assert main(["train", "nope.yaml", "--resume"]) == 2


def test_output_must_be_a_new_or_empty_folder(tmp_path, lm_config):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes")
    with pytest.raises(ConfigError, match=r"is not empty and not a langrl run \(config.yaml\)"):
        langrl.train(lm_config(), output=mine)
    assert (mine / "config.yaml").read_text() == "my own notes"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, not a folder"):
        langrl.train(lm_config(), output=tmp_path / "file")


def test_one_writer_per_run_folder(tmp_path, lm_config):
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(ConfigError, match=rf"in use by another langrl process \(pid {os.getpid()}\)"):
            langrl.train(lm_config(), output=run)
    langrl.train(lm_config(steps=1), output=run)  # released: the folder can be written again


def test_corrupt_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, lm_config, caplog):
    run = tmp_path / "run"
    config = lm_config(steps=4, log__checkpoint_every=1, log__keep_checkpoints=3)
    langrl.train(config, output=run)
    expected = without_times(run)
    newest = run / "checkpoints" / "step-4" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    (run / "checkpoints" / "step-3" / "rng.pt").unlink()
    (run / "checkpoints" / ".tmp-step-5-dead").mkdir()  # a crashed writer's leftovers
    with caplog.at_level(logging.WARNING, logger="langrl"):
        langrl.train(config, output=run, resume=True)
    assert "step-4/model.safetensors is corrupt" in caplog.text and "step-3/rng.pt is missing" in caplog.text
    assert without_times(run) == expected  # resumed from step 2: steps 3 and 4 again, the same
    assert not (run / "checkpoints" / ".tmp-step-5-dead").exists()


def test_half_deleted_checkpoint_does_not_count_and_none_intact_is_an_error(tmp_path, lm_config):
    run = tmp_path / "run"
    langrl.train(lm_config(steps=2, log__checkpoint_every=1), output=run)
    (run / "checkpoints" / "step-2" / MANIFEST).unlink()  # deletion removes COMPLETE first
    assert [p.name for p in list_checkpoints(run)] == ["step-1"]
    optimizer = run / "checkpoints" / "step-1" / "optimizer.pt"
    optimizer.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint .*step-1/optimizer.pt is corrupt"):
        langrl.train(lm_config(steps=2, log__checkpoint_every=1), output=run, resume=True)


def test_non_finite_loss_stops_the_step_before_anything_is_written(tmp_path, lm_config, monkeypatch):
    from langrl.lm.policy_gradient import PolicyGradient

    original = PolicyGradient.loss

    def poisoned(self, model, batch, advantages):
        loss, parts = original(self, model, batch, advantages)
        return loss * float("nan") if batch.step == 2 else loss, parts

    monkeypatch.setattr(PolicyGradient, "loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"^step 2: the loss is nan .*last checkpoint is intact"):
        langrl.train(lm_config(steps=3, log__checkpoint_every=1), output=run)
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1]
    assert [p.name for p in list_checkpoints(run)] == ["step-1"]
    assert main(["report", str(run)]) == 0  # the run folder stays readable


def test_agent_eval_uses_the_policy_the_run_was_trained_with(tmp_path, caplog):
    config = {"kind": "agent", "model": "tiny", "env": {"id": "langrl/CartPole-Text-v0", "num_envs": 2},
              "policy": {"window": 0}, "ppo": {"env_steps": 8, "n_steps": 4, "minibatch_size": 4, "epochs": 1},
              "eval": {"episodes": 1, "prior": False}, "log": {"tensorboard": False, "progress": False}}
    run = tmp_path / "run"
    langrl.train(config, output=run)
    other = {**config, "policy": {"window": 3}, "eval": {"episodes": 2, "prior": False}}
    with caplog.at_level(logging.WARNING, logger="langrl"):
        out = langrl.evaluate(other, str(run))
    assert out["episodes"] == 2 and "the policy section(s) the run was trained with" in caplog.text
    assert json.loads(json.dumps(out))["checkpoint"].endswith("step-1")


def test_checkpoint_with_non_finite_weights_is_never_resumed(tmp_path, lm_config, caplog):
    from safetensors.torch import load_file, save_file

    from langrl.run.checkpoint import write_manifest

    run = tmp_path / "run"
    config = lm_config(steps=2, log__checkpoint_every=1)
    langrl.train(config, output=run)
    step2 = run / "checkpoints" / "step-2"
    weights = load_file(str(step2 / "model.safetensors"))
    next(iter(weights.values())).fill_(float("nan"))
    save_file(weights, str(step2 / "model.safetensors"))
    write_manifest(step2, 2)  # a consistent checkpoint whose weights are NaN, as a diverged run would write
    with caplog.at_level(logging.WARNING, logger="langrl"):
        langrl.train(config, output=run, resume=True)
    assert "step-2/model.safetensors holds non-finite weights" in caplog.text  # resumed from step 1 instead


@pytest.mark.parametrize("disk_full", ["os", "safetensors"])
def test_a_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, lm_config, monkeypatch, disk_full):
    """Whether the OS says so or safetensors does (its own error type, with the OS's text)."""
    import errno

    from safetensors import SafetensorError

    import langrl.run.harness as harness

    original = harness.save_checkpoint

    def full(run_dir, step, *args, **kwargs):
        if step == 2:
            raise (OSError(errno.ENOSPC, "No space left on device") if disk_full == "os" else
                   SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
        return original(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(harness, "save_checkpoint", full)
    run = tmp_path / "run"
    with pytest.raises(langrl.LangrlError, match=r"^step 2: no space left on the device .* then --resume$"):
        langrl.train(lm_config(steps=3, log__checkpoint_every=1), output=run)
    assert [p.name for p in list_checkpoints(run)] == ["step-1"]


def test_a_full_disk_anywhere_is_a_one_line_cli_error(monkeypatch, capsys):
    import errno

    import langrl.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/metrics.jsonl")

    monkeypatch.setitem(cli.COMMANDS, "report", full)
    assert main(["report", "runs/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("langrl report: error: No space left on device: 'runs/x/metrics.jsonl'; free space or fix the "
                   "permissions, then run again (with --resume for train)")
