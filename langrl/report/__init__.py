"""Run reports (``report.png``, ``report.md``), built only from the run folder, for every kind of run."""

from __future__ import annotations

from pathlib import Path

import yaml

from langrl.config import config_kind
from langrl.report.agent import write_agent_report
from langrl.report.lm import summarise
from langrl.report.lm import write_report as write_lm_report

# Runs that act in an environment: their report plots returns against environment steps.
ENV_KINDS = ("agent", "tabular", "dqn")


def write_report(run_dir: str | Path) -> Path:
    """(Re)write the report of ``run_dir``, whatever kind of run its ``config.yaml`` describes."""
    path = Path(run_dir) / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    kind = config_kind(data) if isinstance(data, dict) else "lm"
    if kind in ENV_KINDS:
        return write_agent_report(Path(run_dir))
    if kind == "plan":
        from langrl.planning.run import write_dyna_report

        return write_dyna_report(Path(run_dir))
    return write_lm_report(Path(run_dir))


__all__ = ["summarise", "write_agent_report", "write_lm_report", "write_report"]
