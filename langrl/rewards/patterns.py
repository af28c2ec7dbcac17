"""Pattern rewards: does the completion match a regex, or mention some words.

Cheap, exact, and easy to reason about: good for format rewards ("ends with an answer line")
and for unit-testing a training loop against a reward whose optimum is obvious.
"""

from __future__ import annotations

import re


class RegexReward:
    """Reward = 1.0 if ``re.search(pattern, completion)`` finds a match, else 0.0.

    ``re.search`` (not ``re.match``) so the pattern may match anywhere; anchor it with ``^``/``$``
    to constrain the position.
    """

    def __init__(self, pattern: str, ignore_case: bool = False, name: str = "regex") -> None:
        self.pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        self.name = name

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [1.0 if self.pattern.search(text) else 0.0 for text in completions]


class ContainsReward:
    """Reward = 1.0 if any of ``words`` occurs in the completion, else 0.0; with ``count``, the hit count.

    Words are literal strings (regex characters are escaped). By default they match anywhere,
    also inside longer words ("cat" in "category"); ``whole_word`` requires word boundaries.
    The count is the number of non-overlapping matches of any word, scanning left to right and
    preferring the longest word at each position, so "good" and "goodness" in the word list
    count "goodness" once, not twice.
    """

    def __init__(
        self,
        words: list[str],
        ignore_case: bool = False,
        count: bool = False,
        whole_word: bool = False,
        name: str = "contains",
    ) -> None:
        if not words or any(not w for w in words):
            raise ValueError(
                f"contains reward: words must be a non-empty list of non-empty strings, got {words!r}"
            )
        # Longest first: regex alternation takes the first alternative that matches, not the longest.
        alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
        body = rf"\b(?:{alternatives})\b" if whole_word else f"(?:{alternatives})"
        self.pattern = re.compile(body, re.IGNORECASE if ignore_case else 0)
        self.count = count
        self.name = name

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        if self.count:
            return [float(sum(1 for _ in self.pattern.finditer(text))) for text in completions]
        return [1.0 if self.pattern.search(text) else 0.0 for text in completions]
