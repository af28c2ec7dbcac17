"""Verifiable rewards: check a completion against the ``answer`` column of its prompt's row.

A prompt table such as ``{"prompt": "What is 7 * 8?", "answer": 56}`` (JSONL, CSV, Parquet, a dataset)
brings each row's ``answer`` to the reward, aligned with the completions of that row's prompt. Name it in a
config as ``{type: python, function: "langrl.rewards.answers:exact_answer"}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # the comma of 1,234 (not of "3,4")


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (``-12``, ``3.5``, ``1,234``), or None when it has none.

    The last one because a model that reasons first ("7 * 8 is 7 * 4 * 2 = 56") ends with its answer.
    """
    found = NUMBER.findall(THOUSANDS.sub("", text))
    return float(found[-1]) if found else None


def expected_number(answer: Any) -> float:
    """The number an ``answer`` cell holds: a number, or the last number of its text (a CSV cell, or a
    worked solution ending ``#### 56``)."""
    if isinstance(answer, bool) or answer is None:
        raise ValueError(f"answer {answer!r} is not a number")
    if isinstance(answer, (int, float)):
        return float(answer)
    number = last_number(str(answer))
    if number is None:
        raise ValueError(f"answer {str(answer)[:80]!r} holds no number")
    return number


def exact_answer(prompts: list[str], completions: list[str], answer: Sequence[Any]) -> list[float]:
    """1.0 when the last number of the completion equals the row's ``answer``, else 0.0.

    Numbers are compared as floats with a relative tolerance of 1e-9 (``56``, ``56.0`` and ``56.00`` agree).
    :param answer: the ``answer`` column, one value per completion
    """
    scores = []
    for completion, expected in zip(completions, answer, strict=True):
        got = last_number(completion)
        want = expected_number(expected)
        scores.append(1.0 if got is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9) else 0.0)
    return scores
