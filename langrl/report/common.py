"""What the reports of every kind of run share: reading metric rows, smoothing, markdown helpers."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, TypeGuard


def finite(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def sorted_rows(metrics: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a numeric step, in step order (stable, so rows logged at one step keep their order)."""
    return sorted((r for r in metrics if finite(r.get("step"))), key=lambda r: r["step"])


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over ``window`` points; early points average what exists, so the line spans the run."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def md_cell(text: str, limit: int | None = None) -> str:
    """Make ``text`` safe inside a markdown table cell.

    A ``|`` would split the cell and a newline would end the row. Backslashes are escaped first because in
    GitHub-flavoured markdown ``\\|`` would otherwise read as an escaped backslash followed by a cell break.
    """
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def fenced(text: str, lang: str) -> list[str]:
    """A code fence longer than any backtick run in ``text``, so the text cannot close it early."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", text.rstrip("\n"), fence]
