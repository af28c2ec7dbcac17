"""Tests for crash-safe IO, the run logger and the run report (all fast, CPU only, no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from langrl.report.common import md_cell
from langrl.report.lm import summarise, write_report
from langrl.run.io import (
    append_jsonl,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from langrl.run.logger import RunLogger

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- io


def test_atomic_write_text_and_json_leave_no_temp_files(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "one\n")
    atomic_write_text(tmp_path / "a.txt", "two\n")
    atomic_write_json(tmp_path / "b.json", {"x": 1, "s": "é"})
    assert (tmp_path / "a.txt").read_text() == "two\n"
    assert json.loads((tmp_path / "b.json").read_text(encoding="utf-8")) == {"x": 1, "s": "é"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]


def test_atomic_dir_exception_leaves_no_partial_folder(tmp_path: Path) -> None:
    final = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(final) as d:
            (d / "weights.bin").write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_exception_keeps_existing_folder(tmp_path: Path) -> None:
    final = tmp_path / "ckpt"
    with atomic_dir(final) as d:
        (d / "weights.bin").write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "weights.bin").write_bytes(b"half")
            raise RuntimeError("crash while saving")
    assert (final / "weights.bin").read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_atomic_dir_replaces_existing_folder(tmp_path: Path) -> None:
    final = tmp_path / "ckpt"
    with atomic_dir(final) as d:
        assert d.parent == tmp_path and d.name.startswith(".tmp-ckpt-")
        (d / "old_only.txt").write_text("old")
        (d / "weights.bin").write_bytes(b"v1")
    with atomic_dir(final) as d:
        (d / "weights.bin").write_bytes(b"v2")
    assert (final / "weights.bin").read_bytes() == b"v2"
    assert not (final / "old_only.txt").exists()  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no .tmp- or .old- leftovers


def test_read_jsonl_ignores_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    assert read_jsonl(path) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]


def test_read_jsonl_raises_on_corrupt_middle_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_jsonl(path)


def test_append_jsonl_repairs_a_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "a"')  # a crash mid-append
    append_jsonl(path, {"step": 2, "a": 5.0})
    assert read_jsonl(path) == [{"step": 1}, {"step": 2, "a": 5.0}]
    path.write_text('{"step": 1}')  # complete row, newline missing: kept
    append_jsonl(path, {"step": 2})
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_read_jsonl_missing_ok(tmp_path: Path) -> None:
    assert read_jsonl(tmp_path / "nope.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- logger


def test_run_logger_writes_metrics_samples_and_tensorboard(tmp_path: Path) -> None:
    with RunLogger(tmp_path) as log:
        log.log_metrics(1, {"reward/mean": np.float32(0.5), "kl/ref": torch.tensor(0.25), "loss/policy": 2})
        log.log_metrics(2, {"reward/mean": 0.75, "kl/ref": float("nan")})
        log.log_samples(1, ["p1", "p2"], ["c1", "c|2\nx"], torch.tensor([1.0, -1.0]))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [
        {"step": 1, "reward/mean": 0.5, "kl/ref": 0.25, "loss/policy": 2.0},
        {"step": 2, "reward/mean": 0.75, "kl/ref": None},  # NaN stored as JSON null
    ]
    assert all(type(v) is float for k, v in rows[0].items() if k != "step")
    # Strict JSON: no NaN/Infinity tokens that non-Python readers reject.
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert read_jsonl(tmp_path / "samples.jsonl") == [
        {"step": 1, "prompt": "p1", "completion": "c1", "reward": 1.0},
        {"step": 1, "prompt": "p2", "completion": "c|2\nx", "reward": -1.0},
    ]
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_run_logger_rejects_bad_input(tmp_path: Path) -> None:
    with RunLogger(tmp_path, tensorboard=False) as log:
        with pytest.raises(ValueError, match="equal lengths"):
            log.log_samples(1, ["p"], ["c", "d"], [1.0])
        with pytest.raises(ValueError, match="step"):
            log.log_metrics(1, {"step": 3.0})
        with pytest.raises(TypeError, match="reward/mean"):
            log.log_metrics(1, {"reward/mean": "high"})
        with pytest.raises(ValueError, match="phase"):
            log.log_eval_samples("during", 0, [], [], [])
    with pytest.raises(RuntimeError, match="closed"):
        log.log_metrics(1, {"a": 1.0})


def _log_steps(log: RunLogger, steps: range) -> None:
    for s in steps:
        log.log_metrics(s, {"reward/mean": s / 10})
        log.log_samples(s, [f"p{s}"], [f"c{s}"], [float(s)])


def test_resume_drops_rows_after_start_step(tmp_path: Path) -> None:
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    with RunLogger(full, tensorboard=False) as log:
        _log_steps(log, range(1, 11))
    # Interrupted run: checkpoint at step 6, crash after logging step 8 and half a row of step 9.
    with RunLogger(resumed, tensorboard=False) as log:
        _log_steps(log, range(1, 9))
    with open(resumed / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "rew')
    with RunLogger(resumed, start_step=6, tensorboard=False) as log:
        assert [r["step"] for r in read_jsonl(resumed / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
        assert [r["step"] for r in read_jsonl(resumed / "samples.jsonl")] == [1, 2, 3, 4, 5, 6]
        _log_steps(log, range(7, 11))
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert (resumed / name).read_bytes() == (full / name).read_bytes()


def test_resume_with_tensorboard_purges(tmp_path: Path) -> None:
    with RunLogger(tmp_path) as log:
        _log_steps(log, range(1, 5))
    with RunLogger(tmp_path, start_step=2) as log:
        _log_steps(log, range(3, 5))
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]


def test_eval_samples_rerun_replaces_phase(tmp_path: Path) -> None:
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log_eval_samples("before", 0, ["a", "b"], ["old-a", "old-b"], [0.0, 0.0])
        log.log_eval_samples("before", 0, ["a", "b"], ["a0", "b0"], [0.1, 0.2])
        log.log_eval_samples("after", 10, ["a", "b"], ["a1", "b1"], [0.9, 0.8])
    rows = read_jsonl(tmp_path / "eval_samples.jsonl")
    assert [(r["phase"], r["step"], r["completion"]) for r in rows] == [
        ("before", 0, "a0"),
        ("before", 0, "b0"),
        ("after", 10, "a1"),
        ("after", 10, "b1"),
    ]


# ---------------------------------------------------------------- report


def test_summarise_hand_computed() -> None:
    # 12 steps, reward/mean = step, given out of order; kl only on some steps; one null time.
    rows = [
        {"step": s, "reward/mean": float(s), "time/step_s": 2.0, "samples/per_s": 8.0}
        for s in range(12, 0, -1)
    ]
    rows[0]["kl/ref"] = 0.5  # step 12, the last step
    rows[5]["kl/ref"] = 0.1  # step 7
    rows[1]["time/step_s"] = None  # step 11
    rows[2]["time/step_s"] = 5.0  # step 10
    rows[3]["samples/per_s"] = 1.0  # step 9
    s = summarise(rows)
    assert s["steps"] == 12
    assert s["reward_first10"] == pytest.approx(5.5)  # mean(1..10)
    assert s["reward_last10"] == pytest.approx(7.5)  # mean(3..12)
    assert s["kl_final"] == 0.5
    assert s["kl_last10"] == pytest.approx(0.3)  # the two steps that logged it
    assert s["step_s_median"] == 2.0  # ten 2.0s and one 5.0
    assert s["samples_per_s_median"] == 8.0
    assert s["non_finite_steps"] == []
    assert set(s) == {
        "steps",
        "non_finite_steps",
        "reward_first10",
        "reward_last10",
        "kl_final",
        "kl_last10",
        "step_s_median",
        "samples_per_s_median",
    }


def test_summarise_short_and_empty() -> None:
    s = summarise([{"step": 1, "reward/mean": 0.25}, {"step": 2, "reward/mean": 0.75}])
    assert s["reward_first10"] == s["reward_last10"] == pytest.approx(0.5)
    assert s["kl_final"] is None and s["step_s_median"] is None
    empty = summarise([])
    assert empty["steps"] == 0 and empty["non_finite_steps"] == []
    assert all(v is None for k, v in empty.items() if k not in ("steps", "non_finite_steps"))


def _synthetic_run(run_dir: Path, n_steps: int, with_kl: bool = True) -> None:
    rng = np.random.default_rng(0)
    with RunLogger(run_dir, tensorboard=False) as log:
        for s in range(1, n_steps + 1):
            m = {
                "reward/mean": math.tanh(s / 40) + 0.1 * rng.standard_normal(),
                "reward/std": 0.3,
                "time/step_s": 3.0 + 0.1 * rng.standard_normal(),
                "samples/per_s": 2.5,
            }
            if with_kl:
                m["kl/ref"] = 0.002 * s
            log.log_metrics(s, m)
        prompts = ["The movie was", "Pipes | and\nnewlines"]
        log.log_eval_samples("before", 0, prompts, ["boring.", "a|b"], [-0.5, 0.0])
        log.log_eval_samples("after", n_steps, prompts, ["wonderful!", "line1\nline2"], [0.9, 0.4])
    (run_dir / "config.yaml").write_text("algo: grpo\nlr: 1.0e-5\n")


def test_write_report(tmp_path: Path) -> None:
    run = tmp_path / "grpo-run"
    _synthetic_run(run, 120)
    md_path = write_report(run)
    assert md_path == run / "report.md"
    png = (run / "report.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    md = md_path.read_text()
    assert md.startswith("# Run report: grpo-run")
    assert "![curves](report.png)" in md
    assert "| prompt | before | reward | after | reward |" in md
    assert "| The movie was | boring. | -0.5 | wonderful! | 0.9 |" in md
    assert "| Pipes \\| and<br>newlines | a\\|b | 0 | line1<br>line2 | 0.4 |" in md
    assert "| steps | 120 |" in md
    assert "```yaml\nalgo: grpo\nlr: 1.0e-5\n```" in md
    assert not list(run.glob(".tmp-*"))


def test_write_report_one_step_without_kl(tmp_path: Path) -> None:
    run = tmp_path / "tiny"
    with RunLogger(run, tensorboard=False) as log:
        log.log_metrics(1, {"reward/mean": 0.3})
    md = write_report(run).read_text()
    assert (run / "report.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "| kl/ref, final | n/a |" in md
    assert "mean of first 1 steps | 0.3 |" in md
    assert "No before/after samples" in md and "No config.yaml" in md


def test_write_report_needs_a_run_folder(tmp_path: Path) -> None:
    from langrl.errors import LangrlError

    with pytest.raises(LangrlError, match="metrics.jsonl"):
        write_report(tmp_path)


def test_md_cell_escapes() -> None:
    assert md_cell("a|b\r\nc\\") == "a\\|b<br>c\\\\"


def test_summarise_flags_non_finite_steps_and_has_no_final_kl_after_one() -> None:
    rows = [{"step": 1, "reward/mean": 0.1, "kl/ref": 0.2}, {"step": 2, "reward/mean": 0.3, "kl/ref": None}]
    s = summarise(rows)
    assert s["non_finite_steps"] == [2] and s["kl_final"] is None and s["reward_last10"] == pytest.approx(0.2)


def test_report_evaluates_before_and_after_against_best_of_n(tmp_path: Path) -> None:
    """Several samples per evaluation prompt: the report gives the mean reward before and after, the KL after,
    best-of-n (unbiased, per prompt) at that KL, the estimated optimum, and one completion per prompt."""
    from langrl.report.frontier import reference_curves
    from langrl.report.lm import evaluation_summary

    run = tmp_path / "run"
    prompts = [p for p in ("p1", "p2") for _ in range(4)]
    with RunLogger(run, tensorboard=False) as log:
        log.log_metrics(1, {"reward/mean": 0.1, "kl/ref": 0.0})
        log.log_eval_samples("before", 0, prompts, [f"b{i}" for i in range(8)],
                             [0.0, 0.2, 0.4, 0.6, -0.5, 0.0, 0.5, 1.0], [0.0] * 8, held_out=True)
        log.log_eval_samples("after", 5, prompts, [f"a{i}" for i in range(8)],
                             [0.5, 0.5, 0.6, 0.6, 0.2, 0.4, 0.6, 0.8], [1.0, 1.2, 0.8, 1.0] * 2, held_out=True)
    s = evaluation_summary(run)
    assert (s["eval_prompts"], s["eval_samples"], s["eval_held_out"]) == (2, 4, True)
    assert s["eval_reward_before"] == pytest.approx(0.275) and s["eval_reward_after"] == pytest.approx(0.525)
    assert s["eval_kl_after"] == pytest.approx(1.0)
    assert s["eval_gain_per_sqrt_nat"] == pytest.approx(0.25)  # (0.525 - 0.275) / sqrt(1.0)
    # the mean of the prompts' reward variances (unbiased): (0.2 / 3 + 1.25 / 3) / 2
    assert s["eval_optimum_per_sqrt_nat"] == pytest.approx(math.sqrt(2 * (0.2 / 3 + 1.25 / 3) / 2))
    curves = reference_curves(run)
    # best of 4 = the best sample of each prompt: (0.6 + 1.0) / 2, at the KL bound log 4 - 3/4
    assert curves["best_of_n"][-1] == pytest.approx([math.log(4) - 0.75, 0.8])
    # best of 2, per prompt: the mean over the 6 pairs of each prompt's samples
    assert curves["best_of_n"][1][1] == pytest.approx((2.8 / 6 + 4.0 / 6) / 2)
    # KL 1.0 lies between best of 2 (0.307) and best of 4 (0.636)? No: beyond best of 4, so no reading
    assert s["best_of_n_at_kl"] is None
    optimum = curves["optimum_is"]
    assert all(kl <= 0.5 * math.log(4) + 1e-9 for kl, _ in optimum)
    assert [r for _, r in optimum] == sorted(r for _, r in optimum)  # more KL buys more reward
    md = write_report(run).read_text()
    assert "| reward on held-out prompts (2 x 4 completions), before training | 0.275 |" in md
    assert "| reward gained per sqrt(nat) on held-out prompts: this run | 0.25 |" in md
    assert "| p1 | b0 | 0 | a0 | 0.5 |" in md and "b1" not in md  # the first completion of each prompt
