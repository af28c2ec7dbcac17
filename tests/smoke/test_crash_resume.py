"""A run killed with SIGKILL, then continued with ``--resume``, logs what the uninterrupted run logs.

Each test starts ``python -m langrl.cli train CONFIG --output DIR`` on a tiny-model LM config with a
checkpoint every step, kills it (``kill -9``: no handler, no cleanup) at a chosen moment, then runs the
same command with ``--resume`` and compares ``metrics.jsonl`` (without ``time/*`` and ``samples/per_s``)
with an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

STEPS = 4
TIMEOUT_S = 120  # per process; a tiny-model run takes a few seconds
VOLATILE = ("time/", "samples/per_s")
ROOT = Path(__file__).resolve().parents[2]


def write_config(folder: Path, lm_config: Callable[..., dict[str, Any]]) -> Path:
    config = lm_config(steps=STEPS, log__checkpoint_every=1, log__keep_checkpoints=STEPS, log__tensorboard=False,
                       log__progress=False)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def command(config: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "langrl.cli", "train", str(config), "--output", str(run), *extra]


def start(config: Path, run: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The command in the background; its output goes to ``<run>.log`` (appended, one file per run)."""
    with open(run.parent / f"{run.name}.log", "ab") as log:
        return subprocess.Popen(command(config, run, *extra), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "LANGRL_CACHE": str(run.parent / "cache")})


def finish(process: subprocess.Popen[bytes], run: Path) -> None:
    rc = process.wait(timeout=TIMEOUT_S)
    log = (run.parent / f"{run.name}.log").read_text(errors="replace")
    assert rc == 0, f"exit {rc}; reproduce: {' '.join(map(str, process.args))}\n{log[-3000:]}"  # type: ignore[arg-type]


def metrics(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if not k.startswith(VOLATILE)} for row in rows]


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool]) -> bool:
    """Poll ``ready`` every half millisecond and SIGKILL the process when it holds; False if the process
    ended first."""
    deadline = time.monotonic() + TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.0005)
    return False


def names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def rows_logged(run: Path) -> int:
    try:
        return sum(1 for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return 0


def resume_and_compare(config: Path, run: Path, reference: list[dict[str, Any]]) -> None:
    finish(start(config, run, "--resume"), run)
    resumed = metrics(run)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for x, y in zip(reference, resumed, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (x["step"], key)
    assert not [n for n in names(run / "checkpoints") if n.startswith((".tmp-", ".old-"))]


def test_kill_mid_step_and_while_writing_a_checkpoint_then_resume(tmp_path, lm_config):
    """(a) Killed mid-step (step 2 runs; checkpoint 1 is written), resumed; (b) killed while
    ``checkpoints/.tmp-step-3-*`` is being written, resumed to the end: metrics.jsonl equals the
    uninterrupted run's.

    The uninterrupted run is ``langrl.train(CONFIG, output=DIR)`` in this process (what the command line
    calls), which saves one interpreter start (~10 s on two cores)."""
    import langrl

    config, run = write_config(tmp_path, lm_config), tmp_path / "run"
    langrl.train(str(config), output=tmp_path / "reference")
    reference = metrics(tmp_path / "reference")
    assert [r["step"] for r in reference] == list(range(1, STEPS + 1))

    # (a) mid-step: as soon as checkpoint 1 is published (the run is then past step 1, before the end: a
    # tiny step takes far longer than one poll), whatever the machine's speed.
    process = start(config, run)
    assert kill_when(process, lambda: "step-1" in names(run / "checkpoints")), \
        "the run ended before it could be killed"
    assert rows_logged(run) < STEPS and "step-1" in names(run / "checkpoints")

    # (b) while writing a checkpoint: the temporary folder of step 3 exists and is not yet renamed.
    process = start(config, run, "--resume")
    assert kill_when(process, lambda: any(n.startswith(".tmp-step-3-") for n in names(run / "checkpoints"))), \
        "the resumed run ended before checkpoint 3 was seen being written"
    assert any(n.startswith(".tmp-step-3-") for n in names(run / "checkpoints")), \
        "the kill came after checkpoint 3 was published"
    resume_and_compare(config, run, reference)
