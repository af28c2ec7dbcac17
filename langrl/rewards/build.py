"""`build_reward`: config in, reward callable out. The only place that maps a ``type`` to a class."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langrl.errors import ConfigError
from langrl.rewards.base import RewardFn, reward_name
from langrl.rewards.composite import WeightedSum
from langrl.rewards.config import (
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
from langrl.rewards.python_fn import PythonReward
from langrl.rewards.story import EndingReward, KeywordsReward, RepetitionPenalty, SentimentArcReward
from langrl.rewards.vader import VaderReward


def _vader(spec: VaderSpec) -> RewardFn:
    return VaderReward(name=spec.name or "vader")


def _length(spec: LengthSpec) -> RewardFn:
    return LengthReward(spec.target, spec.unit, name=spec.name or "length")


def _regex(spec: RegexSpec) -> RewardFn:
    return RegexReward(spec.pattern, spec.ignore_case, name=spec.name or "regex")


def _contains(spec: ContainsSpec) -> RewardFn:
    return ContainsReward(
        spec.words, spec.ignore_case, spec.count, spec.whole_word, name=spec.name or "contains"
    )


def _classifier(spec: ClassifierSpec) -> RewardFn:
    # Imported lazily: it pulls in transformers, which costs seconds and only this type needs.
    from langrl.rewards.classifier import ClassifierReward

    return ClassifierReward(
        spec.model,
        spec.label,
        logit=spec.logit,
        batch_size=spec.batch_size,
        device=spec.device,
        max_length=spec.max_length,
        text=spec.text,
        name=spec.name or "classifier",
    )


def _python(spec: PythonSpec) -> RewardFn:
    return PythonReward.from_spec(spec.function, spec.kwargs, spec.name, timeout_s=spec.timeout_s)


def _keywords(spec: KeywordsSpec) -> RewardFn:
    return KeywordsReward(spec.words, spec.ignore_case, name=spec.name or "keywords")


def _ending(spec: EndingSpec) -> RewardFn:
    return EndingReward(spec.target, name=spec.name or "ending")


def _sentiment_arc(spec: SentimentArcSpec) -> RewardFn:
    return SentimentArcReward(spec.arc, name=spec.name or "sentiment_arc")


def _repetition(spec: RepetitionSpec) -> RewardFn:
    return RepetitionPenalty(spec.n, name=spec.name or "repetition")


BUILDERS: dict[str, Callable[[Any], RewardFn]] = {
    "vader": _vader,
    "length": _length,
    "regex": _regex,
    "contains": _contains,
    "classifier": _classifier,
    "python": _python,
    "keywords": _keywords,
    "ending": _ending,
    "sentiment_arc": _sentiment_arc,
    "repetition": _repetition,
}


def build_reward(
    spec: RewardSpec | Mapping[str, Any] | Sequence[RewardSpec | Mapping[str, Any]],
) -> RewardFn:
    """Build the reward a config describes.

    ``spec`` is one reward (a spec model or a mapping such as ``{"type": "vader"}``) or a list of
    them. A list becomes a `WeightedSum` of its entries with their ``weight``s; a single reward
    with ``weight != 1`` is wrapped the same way so the weight is never silently dropped.
    Mappings are validated here; problems raise `ConfigError` naming the field path
    (``reward[1].target``), the bad value and what is allowed.
    """
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence):
        parsed = parse_reward_spec(spec, "reward")
        reward = BUILDERS[parsed.type](parsed)
        return (
            reward
            if parsed.weight == 1.0
            else WeightedSum([reward], [parsed.weight], name=reward_name(reward))
        )
    if len(spec) == 0:
        raise ConfigError("reward: empty list; give at least one reward, e.g. [{type: vader}]")
    parsed_list = [parse_reward_spec(item, f"reward[{i}]") for i, item in enumerate(spec)]
    rewards = [BUILDERS[p.type](p) for p in parsed_list]
    return WeightedSum(rewards, [p.weight for p in parsed_list])
