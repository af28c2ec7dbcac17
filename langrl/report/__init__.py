"""Run reports (``report.png``, ``report.md``), built only from the run folder, for every kind of run."""

from __future__ import annotations

from pathlib import Path

import yaml

from langrl.config import KINDS, config_kind
from langrl.report.agent import write_agent_report
from langrl.report.lm import summarise
from langrl.report.lm import write_report as write_lm_report


def write_report(run_dir: str | Path) -> Path:
    """(Re)write the report of ``run_dir``, whatever kind of run its ``config.yaml`` describes (each kind's
    ``report`` in `langrl.config.KINDS`)."""
    path = Path(run_dir) / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    kind = config_kind(data) if isinstance(data, dict) else "lm"
    written: Path = KINDS[kind].function("report")(Path(run_dir))
    return written


__all__ = ["summarise", "write_agent_report", "write_lm_report", "write_report"]
