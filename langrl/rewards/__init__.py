"""Rewards: callables ``(prompts, completions) -> list[float]``, built from config or by hand.

- `RewardFn`: the protocol; `reward_name` reads a reward's name for messages; `column_use` reads which
  prompt columns (``answer``...) a reward takes as keyword arguments, `check_columns` checks they exist.
- `score`: call a reward and raise `RewardError` (naming reward and completion) on any fault.
- `build_reward`: ``RewardSpec`` (or a mapping, or a list of either) -> reward.
- Built-ins: `VaderReward`, `LengthReward`, `RegexReward`, `ContainsReward`,
  `ClassifierReward`, `PythonReward`, and `WeightedSum` to combine them; for stories (`langrl.rewards.story`)
  `KeywordsReward`, `EndingReward`, `SentimentArcReward` and `RepetitionPenalty`.

`ClassifierReward` is imported lazily (on first attribute access) because importing
transformers costs seconds and most runs never need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langrl.rewards.base import ColumnUse, RewardFn, check_columns, column_use, reward_name
from langrl.rewards.build import build_reward
from langrl.rewards.composite import WeightedSum
from langrl.rewards.config import (
    REWARD_TYPES,
    ClassifierSpec,
    ContainsSpec,
    EndingSpec,
    KeywordsSpec,
    LengthSpec,
    PythonSpec,
    RegexSpec,
    RepetitionSpec,
    RewardSpec,
    SentimentArcSpec,
    VaderSpec,
    parse_reward_spec,
)
from langrl.rewards.length import LengthReward
from langrl.rewards.patterns import ContainsReward, RegexReward
from langrl.rewards.python_fn import PythonReward, load_function
from langrl.rewards.scoring import score
from langrl.rewards.story import EndingReward, KeywordsReward, RepetitionPenalty, SentimentArcReward
from langrl.rewards.vader import VaderReward

if TYPE_CHECKING:
    from langrl.rewards.classifier import ClassifierReward

__all__ = [
    "REWARD_TYPES",
    "ClassifierReward",
    "ClassifierSpec",
    "ColumnUse",
    "ContainsReward",
    "ContainsSpec",
    "EndingReward",
    "EndingSpec",
    "KeywordsReward",
    "KeywordsSpec",
    "LengthReward",
    "LengthSpec",
    "PythonReward",
    "PythonSpec",
    "RegexReward",
    "RegexSpec",
    "RepetitionPenalty",
    "RepetitionSpec",
    "RewardFn",
    "RewardSpec",
    "SentimentArcReward",
    "SentimentArcSpec",
    "VaderReward",
    "VaderSpec",
    "WeightedSum",
    "build_reward",
    "check_columns",
    "column_use",
    "load_function",
    "parse_reward_spec",
    "reward_name",
    "score",
]


def __getattr__(name: str) -> Any:
    """Import `ClassifierReward` (and with it torch + transformers) only when first asked for."""
    if name == "ClassifierReward":
        from langrl.rewards.classifier import ClassifierReward

        return ClassifierReward
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
