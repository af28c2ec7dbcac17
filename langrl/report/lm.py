"""The run report: ``report.png`` (learning curves) and ``report.md`` (summary, samples, config).

The report is built only from files in the run folder (``metrics.jsonl``, ``eval_samples.jsonl``,
``config.yaml``), so it can be regenerated at any time, for a finished run, a crashed one, or one copied
from a cluster, with ``langrl report RUN_DIR``.
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langrl.errors import LangrlError
from langrl.report.common import fenced, finite, md_cell, moving_average, sorted_rows
from langrl.report.frontier import after_point, phase_groups, plot_frontier, reference_curves, reward_at_kl
from langrl.run.io import atomic_write_bytes, atomic_write_text, read_jsonl

__all__ = ["evaluation_summary", "summarise", "summarise_run", "write_report"]

# How many steps the "first" and "last" reward averages cover: one step's reward is too noisy to compare.
EDGE_STEPS = 10
# The before/after table shows the first completion of each of the first SHOWN_PROMPTS evaluation prompts.
SHOWN_PROMPTS = 12
FIGSIZE = (16.0, 4.2)
DPI = 110


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows where ``key`` holds a finite number; null/NaN points are skipped."""
    steps, values = [], []
    for r in rows:
        v = r.get(key)
        if finite(v):
            steps.append(float(r["step"]))
            values.append(float(v))
    return steps, values


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarise(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers of a run, from its ``metrics.jsonl`` rows.

    Keys:
        steps: the number of distinct logged steps.
        reward_first10 / reward_last10: mean of ``reward/mean`` over the first / last 10 steps that logged
            it (fewer if the run is shorter, so both cover the whole of a run of at most 10 steps).
        kl_final: the last ``kl/ref``; kl_last10: its mean over the last 10 steps.
        step_s_median: median of ``time/step_s``; samples_per_s_median: median of ``samples/per_s``.
            Medians, because the first steps include warm-up (allocation, kernel compilation).

    A number is ``None`` when its key was never logged (or only as null/NaN). ``non_finite_steps`` lists
    the steps whose reward, KL, loss or gradient norm was logged as null (NaN/inf): the averages skip them,
    and the report says so instead of quoting the last finite value alone.
    """
    rows = sorted_rows(metrics)
    _, reward = _series(rows, "reward/mean")
    _, kl = _series(rows, "kl/ref")
    _, step_s = _series(rows, "time/step_s")
    _, per_s = _series(rows, "samples/per_s")
    logged_kl = [r["kl/ref"] for r in rows if "kl/ref" in r]
    core = ("reward/mean", "kl/ref", "loss/policy", "grad/norm")
    non_finite = sorted({int(r["step"]) for r in rows for k in core if k in r and not finite(r[k])})
    return {
        "steps": len({r["step"] for r in rows if r["step"] > 0}),  # step 0: the "before" evaluation
        "non_finite_steps": non_finite,
        "reward_first10": _mean(reward[:EDGE_STEPS]),
        "reward_last10": _mean(reward[-EDGE_STEPS:]),
        # the last logged value, not the last finite one: a run that ended non-finite has no final KL
        "kl_final": logged_kl[-1] if logged_kl and finite(logged_kl[-1]) else None,
        "kl_last10": _mean(kl[-EDGE_STEPS:]),
        "step_s_median": statistics.median(step_s) if step_s else None,
        "samples_per_s_median": statistics.median(per_s) if per_s else None,
    }


def evaluation_summary(run_dir: Path) -> dict[str, Any]:
    """The before/after evaluation of a run folder, from ``eval_samples.jsonl`` (empty without it).

    Keys: ``eval_prompts``, ``eval_samples`` (completions per prompt), ``eval_held_out`` (True/False, or None
    when not recorded), ``eval_reward_before`` / ``eval_reward_after`` (mean rewards), ``eval_kl_after``
    (mean KL to the reference after training), ``best_of_n_at_kl``: the best-of-n curve's reward at
    that KL, from the "before" samples (None when the KL lies outside the curve), and two efficiencies in
    reward per square-root nat: ``eval_gain_per_sqrt_nat``, the run's (after - before) / sqrt(KL after), and
    ``eval_optimum_per_sqrt_nat``, sqrt(2 Var(r)) with Var(r) the mean over prompts of the variance of the
    "before" rewards: to first order in the KL, the reward a tilt pi0 exp(r / beta) / Z (the KL-optimal
    policy) gains per sqrt(nat), so the ratio of the two says how close the run came.
    """
    rows = read_jsonl(Path(run_dir) / "eval_samples.jsonl", missing_ok=True)
    before, after = phase_groups(rows, "before"), phase_groups(rows, "after")
    if not before and not after:
        return {}
    flags = {r.get("held_out") for r in rows}
    out: dict[str, Any] = {
        "eval_prompts": len(before or after),
        "eval_samples": min(len(g) for g in before or after),
        "eval_held_out": flags.pop() if len(flags) == 1 else None,
        "eval_reward_before": _mean([r["reward"] for g in before for r in g]),
        "eval_reward_after": _mean([r["reward"] for g in after for r in g]),
    }
    point = after_point(rows)
    out["eval_kl_after"] = point[0] if point else None
    curve = reference_curves(Path(run_dir)).get("best_of_n", [])
    out["best_of_n_at_kl"] = reward_at_kl(curve, point[0]) if point and curve else None
    before_reward, after_reward = out["eval_reward_before"], out["eval_reward_after"]
    out["eval_gain_per_sqrt_nat"] = (after_reward - before_reward) / math.sqrt(point[0]) \
        if point and point[0] > 0 and before_reward is not None and after_reward is not None else None
    out["eval_optimum_per_sqrt_nat"] = optimum_per_sqrt_nat(before)
    return out


def optimum_per_sqrt_nat(before: list[list[dict[str, Any]]]) -> float | None:
    """sqrt(2 Var(r)), Var(r) the mean over prompts of the variance of their "before" rewards (None without
    a prompt sampled twice)."""
    spread = [statistics.variance(r["reward"] for r in g) for g in before if len(g) >= 2]
    return math.sqrt(2 * sum(spread) / len(spread)) if spread else None


def summarise_run(run_dir: Path) -> dict[str, Any]:
    """`summarise` of the run's metrics and its `evaluation_summary`."""
    return {**summarise(read_jsonl(Path(run_dir) / "metrics.jsonl")), **evaluation_summary(run_dir)}


def _empty(ax: Any, message: str) -> None:
    """Say a metric is missing instead of drawing a blank 0..1 axis that looks like data."""
    ax.text(0.5, 0.5, message, ha="center", va="center", color="0.4", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _plot(rows: Sequence[dict[str, Any]], title: str, curves: dict[str, list[list[float]]],
          after: tuple[float, float] | None = None) -> bytes:
    """Render the three-panel figure (reward, KL, reward-vs-KL frontier) to PNG bytes.

    Uses ``matplotlib.figure.Figure`` directly instead of pyplot: no GUI backend is touched and the global
    backend of a user's notebook or script is left alone (``matplotlib.use("Agg")`` would switch it).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax_r, ax_kl, ax_frontier = fig.subplots(1, 3)
    plot_frontier(ax_frontier, list(rows), curves, after)
    fig.suptitle(title)

    steps, reward = _series(rows, "reward/mean")
    if reward:
        few = len(reward) <= 20  # markers, or a 1-step run would draw nothing visible
        std = [r.get("reward/std") for r in rows if finite(r.get("reward/mean"))]
        if any(finite(s) for s in std):
            lo = [m - s if finite(s) else math.nan for m, s in zip(reward, std, strict=True)]
            hi = [m + s if finite(s) else math.nan for m, s in zip(reward, std, strict=True)]
            ax_r.fill_between(steps, lo, hi, color="tab:blue", alpha=0.15, linewidth=0, label="± reward/std")
        ax_r.plot(
            steps,
            reward,
            color="tab:blue",
            alpha=0.55,
            linewidth=1.0,
            marker="o" if few else None,
            markersize=4,
            label="reward/mean",
        )
        window = min(25, len(reward) // 10)
        if window >= 2:
            ax_r.plot(
                steps,
                moving_average(reward, window),
                color="tab:red",
                linewidth=2.0,
                label=f"moving average ({window} steps)",
            )
    eval_steps, eval_reward = _series(rows, "eval/reward")
    if eval_reward:
        ax_r.plot(eval_steps, eval_reward, color="tab:green", marker="s", markersize=5, linewidth=1.5,
                  label="eval/reward (evaluation prompts)")
    if reward or eval_reward:
        ax_r.legend(loc="best", fontsize="small")
    ax_r.set_title("Reward per step")
    ax_r.set_xlabel("step")
    ax_r.set_ylabel("reward (batch mean)")
    ax_r.grid(True, alpha=0.3)

    steps, kl = _series(rows, "kl/ref")
    if kl:
        ax_kl.plot(
            steps, kl, color="tab:purple", linewidth=1.5, marker="o" if len(kl) <= 20 else None, markersize=4,
            label="kl/ref (training batch)"
        )
    eval_steps, eval_kl = _series(rows, "eval/kl")
    if eval_kl:
        ax_kl.plot(eval_steps, eval_kl, color="tab:green", marker="s", markersize=5, linewidth=1.5,
                   label="eval/kl (evaluation prompts)")
        ax_kl.legend(loc="best", fontsize="small")
    ax_kl.set_title("KL(policy ‖ reference)")
    ax_kl.set_xlabel("step")
    ax_kl.set_ylabel("kl/ref (nats)")
    ax_kl.grid(True, alpha=0.3)

    for ax in (ax_r, ax_kl):
        # Whole steps only; a 1-2 step run gets a margin of a step, or the locator falls back to "0.98".
        lo, hi = ax.get_xlim()
        if hi - lo < 2:
            ax.set_xlim(round(lo) - 1, round(hi) + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not reward:
        _empty(ax_r, "no reward/mean logged")
    if not kl:
        _empty(ax_kl, "no kl/ref logged")

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _fmt(x: float | int | None) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return str(x)
    return f"{x:.4g}"


def evaluation_lines(summary: dict[str, Any]) -> list[str]:
    """The summary rows of the before/after evaluation, when the run made one."""
    if "eval_prompts" not in summary:
        return []
    which = {True: "held-out prompts", False: "training prompts"}.get(summary["eval_held_out"], "evaluation prompts")
    where = f"{which} ({summary['eval_prompts']} x {summary['eval_samples']} completions)"
    lines = [f"| reward on {where}, before training | {_fmt(summary['eval_reward_before'])} |",
             f"| reward on {where}, after training | {_fmt(summary['eval_reward_after'])} |"]
    if summary.get("eval_kl_after") is not None:
        lines.append(f"| kl/ref on {which}, after training | {_fmt(summary['eval_kl_after'])} |")
    if summary.get("best_of_n_at_kl") is not None:
        lines.append(f"| best-of-n reward at that KL (from the samples before training) | "
                     f"{_fmt(summary['best_of_n_at_kl'])} |")
    if summary.get("eval_gain_per_sqrt_nat") is not None:
        lines.append(f"| reward gained per sqrt(nat) on {which}: this run | "
                     f"{_fmt(summary['eval_gain_per_sqrt_nat'])} |")
    if summary.get("eval_optimum_per_sqrt_nat") is not None:
        lines.append(f"| the same, the KL-optimal tilt to first order, sqrt(2 Var(r)) before training | "
                     f"{_fmt(summary['eval_optimum_per_sqrt_nat'])} |")
    return lines


def _summary_table(summary: dict[str, Any], n_reward: int) -> list[str]:
    k = min(EDGE_STEPS, n_reward)
    warning = []
    if summary["non_finite_steps"]:
        warning = [f"**Non-finite values (NaN/inf) were logged at steps {summary['non_finite_steps']}**: the "
                   f"figures below skip them.", ""]
    return [*warning,
        "| metric | value |",
        "|---|---|",
        f"| steps | {_fmt(summary['steps'])} |",
        f"| reward/mean, mean of first {k} steps | {_fmt(summary['reward_first10'])} |",
        f"| reward/mean, mean of last {k} steps | {_fmt(summary['reward_last10'])} |",
        f"| kl/ref, mean of last {k} steps | {_fmt(summary['kl_last10'])} |",
        f"| kl/ref, final | {_fmt(summary['kl_final'])} |",
        f"| time/step_s, median | {_fmt(summary['step_s_median'])} |",
        f"| samples/per_s, median | {_fmt(summary['samples_per_s_median'])} |",
        *evaluation_lines(summary),
    ]


def _before_after_table(eval_rows: Sequence[dict[str, Any]]) -> list[str]:
    """The first "before" and the first "after" completion of each of the first ``SHOWN_PROMPTS`` evaluation
    prompts: a fixed rule, so the rows are not picked for how they read. Prompts keep their first-seen order."""
    first: dict[str, dict[str, dict[str, Any]]] = {}
    for r in eval_rows:
        phase = r.get("phase")
        if phase in ("before", "after"):
            first.setdefault(str(r.get("prompt", "")), {}).setdefault(phase, r)
    if not first:
        return ["_No before/after samples were logged._"]

    def cells(r: dict[str, Any] | None) -> str:
        if r is None:
            return " | "
        reward = r.get("reward")
        shown = _fmt(float(reward)) if finite(reward) else "n/a"
        return f"{md_cell(str(r.get('completion', '')))} | {shown}"

    lines = [f"The first completion of each of the first {min(len(first), SHOWN_PROMPTS)} evaluation prompts "
             "(a fixed seed; the same prompts before and after).", "",
             "| prompt | before | reward | after | reward |", "|---|---|---|---|---|"]
    for prompt, phases in list(first.items())[:SHOWN_PROMPTS]:
        lines.append(f"| {md_cell(prompt)} | {cells(phases.get('before'))} | {cells(phases.get('after'))} |")
    return lines


def write_report(run_dir: Path) -> Path:
    """Write ``report.png`` and ``report.md`` into ``run_dir`` and return the path of ``report.md``.

    Reads ``metrics.jsonl`` (required), ``eval_samples.jsonl`` and ``config.yaml`` (both optional). Missing
    metric keys show as "n/a" or an empty panel rather than failing, so any run that logged at least its
    metrics file gets a report. Both files are written atomically.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.exists():
        raise LangrlError(f"{run_dir} has no metrics.jsonl; is it a langrl run folder?")
    rows = sorted_rows(read_jsonl(metrics_path))
    eval_rows = read_jsonl(run_dir / "eval_samples.jsonl", missing_ok=True)
    config_path = run_dir / "config.yaml"
    config = config_path.read_text(encoding="utf-8") if config_path.exists() else None

    name = run_dir.resolve().name
    curves, after = reference_curves(run_dir), after_point(eval_rows)
    atomic_write_bytes(run_dir / "report.png", _plot(rows, f"Run {name}", curves, after))

    summary = {**summarise(rows), **evaluation_summary(run_dir)}
    md = [f"# Run report: {name}", "", *_summary_table(summary, len(_series(rows, "reward/mean")[1]))]
    md += ["", "![curves](report.png)", "", "## Before / after", "", *_before_after_table(eval_rows)]
    md += ["", "## Config", ""]
    md += fenced(config, "yaml") if config is not None else ["_No config.yaml in the run folder._"]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(md) + "\n")
    return report
