"""Environments: the toy token MDP whose KL-regularised optimum is computed exactly.

Its names (:func:`toy_lm`, :func:`letter_reward`, ...) are imported on first use, so importing
``langrl.envs`` (and registering the text environments) imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langrl.envs.toy import TOY_LETTERS, letter_reward, toy_lm, toy_tokenizer

__all__ = ["TOY_LETTERS", "letter_reward", "toy_lm", "toy_tokenizer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from langrl.envs import toy

        return getattr(toy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
