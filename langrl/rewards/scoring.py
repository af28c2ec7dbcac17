"""`score`: call a reward and turn every way it can go wrong into a `RewardError` that says where.

A reward that raises deep inside a training step, or quietly returns NaN, otherwise surfaces
as a NaN loss many steps later with no hint of which text caused it. Checking here, once, at
the boundary between "text" and "numbers", keeps every algorithm free of that bookkeeping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from langrl.errors import RewardError
from langrl.rewards.base import RewardFn, column_use, reward_name

PREVIEW_CHARS = 200


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``repr(text)`` cut to about ``limit`` characters, so an error message stays one readable line.

    ``repr`` (not the raw text) makes whitespace, newlines and the empty string visible.
    """
    shown = repr(text)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(text)} chars)"


def _as_float(value: Any) -> float | None:
    """``float(value)`` for real numbers (int, float, bool, numpy scalars, 1-element tensors), else None.

    Strings are refused even though ``float("1.5")`` works: a reward returning text is a bug.
    """
    if isinstance(value, (str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_sequence(value: Any) -> bool:
    """An ordered sequence of values: a list, tuple or other ``Sequence``, or an array (numpy, torch, pandas,
    via ``__array__``). Not text, a mapping (its keys would be scored), a set (no order) or an iterator."""
    if isinstance(value, (str, bytes, bytearray, Mapping, AbstractSet)):
        return False
    return isinstance(value, Sequence) or hasattr(value, "__array__")


def _find_failing(
    reward: RewardFn, prompts: list[str], completions: list[str], columns: Mapping[str, Sequence[Any]]
) -> tuple[int, BaseException] | None:
    """Call ``reward`` on one pair at a time (with that pair's columns); the first index that raises, with
    its exception.

    Only runs after a batch already failed, so its cost (one call per pair) is paid only on the
    error path. None when every pair scores fine alone (the failure depends on the batch).
    """
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        try:
            reward([prompt], [completion], **{name: [values[i]] for name, values in columns.items()})
        except Exception as e:
            return i, e
    return None


def _columns_for(reward: RewardFn, columns: Mapping[str, Sequence[Any]] | None,
                 count: int) -> dict[str, Sequence[Any]]:
    """The columns ``reward`` declares (`column_use`), each checked to hold one value per completion."""
    use = column_use(reward)
    given = dict(columns or {})
    missing = sorted(use.required - set(given))
    if missing:
        raise RewardError(f"reward {reward_name(reward)!r} takes the prompt column(s) {', '.join(missing)}, "
                          f"which were not given (columns: {', '.join(given) or 'none'})")
    picked = use.pick(given)
    for name, values in picked.items():
        if len(values) != count:
            raise ValueError(f"score: column {name!r} has {len(values)} values for {count} completions")
    return picked


def score(reward: RewardFn, prompts: list[str], completions: list[str],
          columns: Mapping[str, Sequence[Any]] | None = None) -> list[float]:
    """Score ``completions`` with ``reward`` and check the result: one finite float per completion.

    ``columns`` (name -> one value per completion, e.g. each completion's ``answer``) are passed as keyword
    arguments to a reward that declares them (`langrl.rewards.base.column_use`); others never see them.

    Raises `RewardError` (naming the reward) when:

    - the reward raises: the original exception is chained (``raise ... from e``), and the
      pairs are re-scored one at a time to name the first completion that fails alone;
    - it returns something that is not a sequence (a dict, set, string, generator...: a list, tuple or
      array is expected), or the wrong number of values (expected vs got);
    - a value is not a number, or is NaN/inf: the message gives the value, the index and the
      completion.

    A `RewardError` raised inside ``reward`` (e.g. by a component of a weighted sum, which
    scores its parts with this function) is passed through unchanged: it is already specific.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"score: {len(prompts)} prompts but {len(completions)} completions")
    name = reward_name(reward)
    picked = _columns_for(reward, columns, len(completions))
    try:
        raw = reward(prompts, completions, **picked)
    except RewardError:
        raise
    except Exception as e:
        if len(completions) == 1:
            found: tuple[int, BaseException] | None = (0, e)
        else:
            found = _find_failing(reward, prompts, completions, picked)
        if found is None:
            where = f"on a batch of {len(completions)} (each completion scores fine alone)"
        else:
            index, inner = found
            where = f"on completion {index}: {preview(completions[index])}"
            if inner is not e:
                where += f" (alone it raised {type(inner).__name__}: {inner})"
        raise RewardError(f"reward {name!r} raised {type(e).__name__}: {e} {where}") from e

    if not _is_sequence(raw):
        raise RewardError(
            f"reward {name!r} returned a {type(raw).__name__} {raw!r:.100}, "
            f"expected a list of {len(completions)} floats (one per completion, in order)"
        )
    try:
        got = len(raw)
    except TypeError:  # e.g. a 0-d array
        raise RewardError(
            f"reward {name!r} returned {type(raw).__name__} {raw!r:.100}, "
            f"expected a list of {len(completions)} floats"
        ) from None
    if got != len(completions):
        raise RewardError(
            f"reward {name!r} returned {got} values for {len(completions)} completions "
            f"(expected {len(completions)}, got {got})"
        )

    values: list[float] = []
    for i, value in enumerate(raw):
        number = _as_float(value)
        if number is None or not math.isfinite(number):
            problem = "a non-number" if number is None else "a non-finite value"
            raise RewardError(
                f"reward {name!r} returned {problem} {value!r:.100} at index {i} "
                f"for completion {preview(completions[i])}"
            )
        values.append(number)
    return values
