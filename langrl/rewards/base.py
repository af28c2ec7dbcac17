"""The reward interface: a batch of (prompt, completion) pairs in, one float per pair out.

Rewards score whole batches because the expensive ones (a classifier, an LM judge) are only
fast when batched; cheap ones simply loop. Algorithms never call a reward directly: they go
through `langrl.rewards.score`, which turns a crash or a NaN into an error that names the
reward and the completion at fault.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class RewardFn(Protocol):
    """Anything callable as ``reward(prompts, completions) -> list[float]``.

    ``prompts[i]`` is the prompt that produced ``completions[i]``; the result has one float
    per pair, higher is better. Built-in rewards also carry a ``name: str`` used in logs and
    error messages. ``name`` is deliberately not a Protocol member: a ``runtime_checkable``
    Protocol checks every member with ``isinstance``, and a user's plain function has no
    ``name``. Read it with `reward_name`, which falls back to ``__qualname__``.
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
