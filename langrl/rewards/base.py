"""The reward interface: a batch of (prompt, completion) pairs in, one float per pair out.

Rewards score whole batches because the expensive ones (a classifier, an LM judge) are only
fast when batched; cheap ones simply loop. Algorithms never call a reward directly: they go
through `langrl.rewards.score`, which turns a crash or a NaN into an error that names the
reward and the completion at fault.

A reward may also take the columns of the prompts' rows (a verifiable task's ``answer``) as keyword
arguments, one value per completion: it declares them by name (``def exact(prompts, completions,
answer)``) or takes them all with ``**columns``. `column_use` reads that from its signature, so a
reward that declares none is called exactly as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from langrl.errors import ConfigError


@runtime_checkable
class RewardFn(Protocol):
    """Anything callable as ``reward(prompts, completions) -> list[float]``.

    ``prompts[i]`` is the prompt that produced ``completions[i]``; the result has one float
    per pair, higher is better. Built-in rewards also carry a ``name: str`` used in logs and
    error messages. ``name`` is deliberately not a Protocol member: a ``runtime_checkable``
    Protocol checks every member with ``isinstance``, and a user's plain function has no
    ``name``. Read it with `reward_name`, which falls back to ``__qualname__``.

    Row columns, when the reward declares them, come as extra keyword arguments (`column_use`).
    """

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]: ...


def reward_name(reward: Any) -> str:
    """The name to show for ``reward``: its ``name``, else ``__qualname__``, else its class name.

    A `functools.partial` has neither, so the class-name fallback keeps this total.
    """
    name = getattr(reward, "name", None)
    if isinstance(name, str) and name:
        return name
    qualname = getattr(reward, "__qualname__", None)
    if isinstance(qualname, str) and qualname:
        return qualname
    return type(reward).__qualname__


POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class ColumnUse:
    """The prompt columns a reward takes as keyword arguments: ``names`` (declared), all of them (``every``:
    it has ``**kwargs``), and ``required`` (declared without a default)."""

    names: frozenset[str] = frozenset()
    every: bool = False
    required: frozenset[str] = frozenset()

    def pick(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, Sequence[Any]]:
        """The columns to pass."""
        return {name: values for name, values in columns.items() if self.every or name in self.names}

    def __or__(self, other: ColumnUse) -> ColumnUse:
        return ColumnUse(self.names | other.names, self.every or other.every, self.required | other.required)


def signature_columns(fn: Callable[..., Any], fixed: Collection[str] = ()) -> ColumnUse:
    """The columns ``fn(prompts, completions, ...)`` declares: its parameters after the first two positional
    ones, except ``fixed`` (arguments already given, e.g. a python reward's config ``kwargs``)."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables have no signature: no columns
        return ColumnUse()
    positional = [p for p in parameters if p.kind in POSITIONAL][:2]
    rest = [p for p in parameters if p not in positional and p.name not in fixed]
    return ColumnUse(
        names=frozenset(p.name for p in rest if p.kind in NAMED),
        every=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest),
        required=frozenset(p.name for p in rest if p.kind in NAMED and p.default is inspect.Parameter.empty),
    )


def column_use(reward: Any) -> ColumnUse:
    """The columns ``reward`` takes: its own ``column_use()`` when it has one (a reward that wraps others
    or a user function), else what its call signature declares."""
    own = getattr(reward, "column_use", None)
    if callable(own):
        use: ColumnUse = own()
        return use
    return signature_columns(reward)


def check_columns(reward: Any, available: Collection[str]) -> None:
    """Raise `ConfigError` when ``reward`` needs a column the prompts lack (before any model runs)."""
    missing = sorted(column_use(reward).required - set(available))
    if missing:
        raise ConfigError(f"reward {reward_name(reward)!r} takes the prompt column(s) {', '.join(missing)}, "
                          f"which the prompts lack (columns: {', '.join(available) or 'none: a text source'}); "
                          f"read prompts from a table with that column (prompts.file: x.jsonl)")
