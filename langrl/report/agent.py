"""The report of an LM agent run: success rate and return against environment steps, and a table of the
zero-shot prior, the cloned policy and the PPO-trained policy on held-out seeds.

Built only from the run folder (``metrics.jsonl``, ``config.yaml``), like the LM run report.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from langrl.report.common import fenced, finite, moving_average, sorted_rows
from langrl.run.io import atomic_write_bytes, atomic_write_text, read_jsonl

PHASES = (("prior", "zero-shot prior (pretrained LM)"), ("cloned", "after behaviour cloning"),
          ("eval", "after training (last evaluation)"), ("final", "final network, held-out test seeds"),
          ("best", "best evaluated network, held-out test seeds"))


def phase_results(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """``{phase: {"success_rate", "mean_return", "episodes", "env_steps"}}``, the last evaluation of each
    phase (:data:`PHASES`) that was logged; success rate is None where the environment has none."""
    out: dict[str, dict[str, float | None]] = {}
    for row in rows:
        for phase, _ in PHASES:
            if finite(row.get(f"{phase}/success_rate")) or finite(row.get(f"{phase}/mean_return")):
                out[phase] = {"success_rate": row.get(f"{phase}/success_rate"),
                              "mean_return": row.get(f"{phase}/mean_return"),
                              "episodes": row.get(f"{phase}/episodes"), "env_steps": row.get("env/steps", 0)}
    return out


def summarise_agent(run_dir: Path) -> dict[str, Any]:
    """Phase results, env steps, wall time, and the median seconds per env step and per BC sample."""
    rows = sorted_rows(read_jsonl(Path(run_dir) / "metrics.jsonl"))

    def last(key: str) -> Any:
        values = [r[key] for r in rows if finite(r.get(key))]
        return values[-1] if values else None

    def median(key: str) -> Any:
        values = sorted(r[key] for r in rows if finite(r.get(key)))
        return values[len(values) // 2] if values else None

    return {"phases": phase_results(rows), "env_steps": last("env/steps"), "wall_s": last("time/elapsed_s"),
            "env_step_s_median": median("time/env_step_s"), "bc_per_sample_s": last("time/bc_per_sample_s")}


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(env steps, values) of the rows that logged ``key``."""
    pairs = [(float(r["env/steps"]), float(r[key])) for r in rows
             if finite(r.get(key)) and finite(r.get("env/steps"))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot(rows: list[dict[str, Any]], title: str) -> bytes:
    """Success rate and return against environment steps (rollout episodes and held-out evaluations)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 4.2), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2)
    fig.suptitle(title)
    phases = phase_results(rows)
    returns = "rollout/return" if any(finite(r.get("rollout/return")) for r in rows) else "rollout/episode_return"
    panels = (("rollout/success_rate", "success_rate", "success rate"), (returns, "mean_return", "return"))
    for ax, (rollout_key, eval_key, label) in zip(axes, panels, strict=True):
        x, y = series(rows, rollout_key)
        if y:
            ax.plot(x, y, color="tab:blue", alpha=0.4, label="training episodes")
            window = min(10, max(1, len(y) // 5))
            ax.plot(x, moving_average(y, window), color="tab:blue", label=f"moving average ({window})")
        x, y = series(rows, f"eval/{eval_key}")
        if y:
            ax.plot(x, y, "o-", color="tab:red", label="held-out seeds")
        for (phase, name), colour in zip(PHASES[:2], ("0.5", "tab:green"), strict=True):
            value = phases.get(phase, {}).get(eval_key)
            if finite(value):
                ax.axhline(value, color=colour, linestyle="--", label=name)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.set_title(f"{label.capitalize()} against environment steps")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_agent_report(run_dir: Path) -> Path:
    """Write ``report.png`` and ``report.md`` of an agent run; return the path of ``report.md``."""
    run_dir = Path(run_dir)
    rows = sorted_rows(read_jsonl(run_dir / "metrics.jsonl"))
    name = run_dir.resolve().name
    atomic_write_bytes(run_dir / "report.png", plot(rows, f"Agent run {name}"))
    summary = summarise_agent(run_dir)
    md = [f"# Agent run report: {name}", "", "| policy | success rate | mean return | episodes | env steps |",
          "|---|---|---|---|---|"]
    for phase, label in PHASES:
        r = summary["phases"].get(phase)
        if r is not None:
            md.append(f"| {label} | {fmt(r['success_rate'])} | {fmt(r['mean_return'])} | {fmt(r['episodes'])} "
                      f"| {fmt(r['env_steps'])} |")
    cloning = (f"; s per cloned sample (per epoch): {fmt(summary['bc_per_sample_s'])}"
               if finite(summary["bc_per_sample_s"]) else "")
    md += ["", f"Environment steps: {fmt(summary['env_steps'])}; wall time: {fmt(summary['wall_s'])} s; "
           f"median s per environment step: {fmt(summary['env_step_s_median'])}{cloning}.", "",
           "![curves](report.png)", "", "## Config", ""]
    config = run_dir / "config.yaml"
    md += fenced(config.read_text(encoding="utf-8"), "yaml") if config.exists() else ["_No config.yaml._"]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(md) + "\n")
    return report


def fmt(x: Any) -> str:
    return "n/a" if not finite(x) else (f"{x:.4g}" if isinstance(x, float) else str(x))
