"""Target-length reward: the simplest reward with a known optimum, useful for checking a trainer."""

from __future__ import annotations

from typing import Literal

LengthUnit = Literal["words", "chars"]


def text_length(text: str, unit: LengthUnit) -> int:
    """Length of ``text`` in ``unit``: whitespace-separated words, or characters."""
    return len(text.split()) if unit == "words" else len(text)


class LengthReward:
    """Reward = ``-|len(completion) - target| / target``.

    0 is best (exactly ``target`` long); each unit of distance costs ``1/target``, so an empty
    completion scores -1 whatever the target, and the scale does not grow with the target.
    Length is counted in ``unit``: whitespace-separated ``"words"`` or ``"chars"``.
    """

    def __init__(self, target: int, unit: LengthUnit = "words", name: str = "length") -> None:
        if target <= 0:
            raise ValueError(f"length reward: target must be > 0, got {target}")
        if unit not in ("words", "chars"):
            raise ValueError(f"length reward: unit must be 'words' or 'chars', got {unit!r}")
        self.target = target
        self.unit: LengthUnit = unit
        self.name = name

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [-abs(text_length(text, self.unit) - self.target) / self.target for text in completions]
