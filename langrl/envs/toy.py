"""The toy token MDP: an 8-letter random LM (`langrl.models.toy`) writes completions of exactly L letters,
V**L of them, so the KL-regularised optimum pi* = pi0 exp(r / beta) / Z is computed exactly. Rewards are
ordinary text rewards on the letter strings, e.g. :func:`letter_reward`.
"""

from __future__ import annotations

from langrl.models.toy import TOY_LETTERS, toy_lm, toy_tokenizer

__all__ = ["TOY_LETTERS", "letter_reward", "toy_lm", "toy_tokenizer"]


def letter_reward(prompts: list[str], completions: list[str], letter: str = "h") -> list[float]:
    """The share of the completion's letters that equal ``letter`` (in [0, 1])."""
    return [c.count(letter) / max(1, len(c)) for c in completions]
