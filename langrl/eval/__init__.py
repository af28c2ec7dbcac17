"""Run logging (JSON Lines + TensorBoard) and the run report (curves, summary, before/after samples)."""

from langrl.eval.logger import RunLogger
from langrl.eval.report import summarise, write_report

__all__ = ["RunLogger", "summarise", "write_report"]
