"""Reward configuration: one pydantic model per reward type, joined as a union tagged by ``type``.

YAML examples::

    reward: {type: vader}
    reward:
      - {type: vader, weight: 1.0}
      - {type: length, target: 20, unit: words, weight: 0.5}
    reward:                                   # a story: ends happier, on the classic line, without loops
      - {type: sentiment_arc, arc: rise}
      - {type: ending, target: "And they all lived happily ever after."}
      - {type: repetition, n: 3}

The top-level training config declares ``reward: RewardSpec | list[RewardSpec]``; `build_reward`
turns either into a callable. Specs only describe; nothing is loaded until `build_reward`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from langrl.errors import ConfigError


class _SpecBase(BaseModel):
    """Fields every reward type shares."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(
        1.0,
        allow_inf_nan=False,
        description="Multiplier on this reward; in a list of rewards the total is the weighted sum. "
        "Negative weights turn a reward into a penalty.",
    )
    name: str | None = Field(
        None,
        min_length=1,
        description="Label in logs and error messages; defaults to the type (python: 'python:<function>').",
    )


class VaderSpec(_SpecBase):
    """VADER sentiment compound score of the completion, in [-1, 1]."""

    type: Literal["vader"] = Field(description="VADER sentiment of the completion, in [-1, 1].")


class LengthSpec(_SpecBase):
    """Target length: ``-|len - target| / target``, 0 at exactly ``target``, -1 for an empty completion."""

    type: Literal["length"] = Field(description="Target-length reward, -|len - target| / target (0 is best).")
    target: int = Field(gt=0, description="Desired completion length, in `unit`s.")
    unit: Literal["words", "chars"] = Field(
        "words", description="How length is counted: whitespace-separated 'words' or 'chars'."
    )


class RegexSpec(_SpecBase):
    """1.0 if ``re.search(pattern, completion)`` matches, else 0.0."""

    type: Literal["regex"] = Field(description="1.0 if the regex is found in the completion, else 0.0.")
    pattern: str = Field(description="Python regular expression, searched anywhere (anchor with ^ or $).")
    ignore_case: bool = Field(False, description="Match case-insensitively (re.IGNORECASE).")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        """Fail at config time, not at the first reward call mid-training."""
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return pattern


class ContainsSpec(_SpecBase):
    """1.0 if any of ``words`` occurs in the completion (or, with ``count``, how many times)."""

    type: Literal["contains"] = Field(description="1.0 if any of `words` occurs in the completion, else 0.0.")
    words: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="Literal strings to look for (not regexes)."
    )
    ignore_case: bool = Field(False, description="Match case-insensitively.")
    count: bool = Field(False, description="Reward the number of (non-overlapping) hits instead of 1.0/0.0.")
    whole_word: bool = Field(False, description="Only match whole words ('cat' then misses 'category').")


class ClassifierSpec(_SpecBase):
    """Probability (or log-odds) of one label of a Hugging Face sequence classifier."""

    type: Literal["classifier"] = Field(description="Probability of `label` under a sequence classifier.")
    model: str = Field(
        min_length=1, description="Hub name or local folder (save_pretrained) of the classifier."
    )
    label: str | int = Field(
        description="Label to reward: a name from model.config.id2label (e.g. 'POSITIVE') or an index."
    )
    logit: bool = Field(False, description="Reward the log-odds log(p/(1-p)) instead of the probability p.")
    text: Literal["completion", "prompt+completion"] = Field(
        "completion",
        description="What is scored: the completion alone, or prompt and completion concatenated.",
    )
    batch_size: int = Field(32, gt=0, description="Texts per classifier forward pass.")
    max_length: int = Field(512, gt=0, description="Inputs are truncated to this many tokens.")
    device: str | None = Field(
        None, description="Torch device, e.g. 'cpu' or 'cuda:0'; default CUDA if available."
    )


class PythonSpec(_SpecBase):
    """A user function ``f(prompts, completions, **kwargs) -> list[float]``, imported by name."""

    type: Literal["python"] = Field(
        description="A user function named 'module:function' or 'file.py:function'."
    )
    function: str = Field(
        min_length=1,
        description="'module:function' (module importable, e.g. on PYTHONPATH) or 'dir/file.py:function'.",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments passed to the function on every call."
    )
    timeout_s: float | None = Field(
        60.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds one call (one batch of completions) may take before the run stops with an "
        "error naming the reward (the call runs in a worker thread); null waits forever and calls the "
        "function in the caller's thread.",
    )


class KeywordsSpec(_SpecBase):
    """Fraction of ``words`` that occur in the completion as whole words, in [0, 1] (keyword constraints)."""

    type: Literal["keywords"] = Field(
        description="Fraction of the keywords `words` the completion uses (whole words), in [0, 1]."
    )
    # Before `words`, so that the check of `words` for duplicates knows how they are compared.
    ignore_case: bool = Field(
        True, description="Match case-insensitively (a keyword that opens a sentence is capitalised)."
    )
    words: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        description="Keywords (or phrases, e.g. 'ever after') the completion should use; each counts once.",
    )

    @field_validator("words")
    @classmethod
    def _distinct_words(cls, words: list[str], info: ValidationInfo) -> list[str]:
        """A keyword listed twice would weigh double in the fraction, and a blank one matches every space:
        refuse both rather than guess."""
        ignore_case = info.data.get("ignore_case", True)
        seen: set[str] = set()
        for word in words:
            if not word.strip():
                raise ValueError(f"{word!r} is blank; give words or phrases such as 'dragon' or 'ever after'")
            key = word.lower() if ignore_case else word
            if key in seen:
                how = " (ignoring case: set ignore_case: false to tell them apart)" if ignore_case else ""
                raise ValueError(f"{word!r} is listed twice{how}; list each keyword once")
            seen.add(key)
        return words


class EndingSpec(_SpecBase):
    """ROUGE-L F1 of the completion's last sentence against ``target``, in [0, 1] (1: the exact ending)."""

    type: Literal["ending"] = Field(
        description="ROUGE-L F1 of the completion's last sentence against `target`, in [0, 1]."
    )
    target: str = Field(
        min_length=1,
        description="The ending sentence to aim for, e.g. 'And they all lived happily ever after.'; a target of "
        "n sentences is compared with the completion's last n.",
    )

    @field_validator("target")
    @classmethod
    def _has_words(cls, target: str) -> str:
        """ROUGE compares runs of a-z and 0-9: an ending without any would score 0 for every completion."""
        if not re.search(r"[A-Za-z0-9]", target):
            raise ValueError("has no words (ASCII letters or digits: what ROUGE compares); give an ending sentence, "
                             "e.g. 'And they all lived happily ever after.'")
        return target


class SentimentArcSpec(_SpecBase):
    """How much VADER sentiment rises (or falls) from the completion's first half to its second, in [-1, 1]."""

    type: Literal["sentiment_arc"] = Field(
        description="VADER sentiment change from the first half of the completion to the second, in [-1, 1]."
    )
    arc: Literal["rise", "fall"] = Field(
        "rise",
        description="rise: reward (second - first) / 2 (a story that ends happier than it starts); "
        "fall: (first - second) / 2.",
    )


class RepetitionSpec(_SpecBase):
    """Minus the fraction of the completion's n-grams that repeat an earlier one, in [-1, 0] (a penalty)."""

    type: Literal["repetition"] = Field(
        description="Penalty: minus the fraction of repeated word n-grams in the completion, in [-1, 0]."
    )
    n: int = Field(
        3, ge=1, description="n-gram order, over lower-cased words and punctuation marks (eval metric's words)."
    )


RewardSpec = Annotated[
    VaderSpec
    | LengthSpec
    | RegexSpec
    | ContainsSpec
    | ClassifierSpec
    | PythonSpec
    | KeywordsSpec
    | EndingSpec
    | SentimentArcSpec
    | RepetitionSpec,
    Field(discriminator="type"),
]
"""One reward's config; pydantic picks the model from the ``type`` field."""

SPEC_TYPES: dict[str, type[_SpecBase]] = {
    "vader": VaderSpec,
    "length": LengthSpec,
    "regex": RegexSpec,
    "contains": ContainsSpec,
    "classifier": ClassifierSpec,
    "python": PythonSpec,
    "keywords": KeywordsSpec,
    "ending": EndingSpec,
    "sentiment_arc": SentimentArcSpec,
    "repetition": RepetitionSpec,
}
REWARD_TYPES: tuple[str, ...] = tuple(SPEC_TYPES)

_ADAPTER: TypeAdapter[Any] = TypeAdapter(RewardSpec)


def _join(path: str, loc: Sequence[int | str]) -> str:
    """``reward`` + ``(1, 'words', 0)`` -> ``reward[1].words[0]``."""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def describe_error(error: Mapping[str, Any], path: str) -> str:
    """One line for one pydantic error: the field path, what is wrong, the bad value, what is allowed."""
    kind = error["type"]
    loc = list(error["loc"])
    bad = error.get("input")
    if kind == "union_tag_invalid":
        return (
            f"{_join(path, loc)}.type: unknown reward type {error['ctx']['tag']!r}; "
            f"allowed types: {', '.join(REWARD_TYPES)}"
        )
    if kind == "union_tag_not_found":
        return f"{_join(path, loc)}: missing field 'type'; allowed types: {', '.join(REWARD_TYPES)}"
    if kind in ("model_attributes_type", "dict_type", "model_type") and not loc:
        allowed = ", ".join(REWARD_TYPES)
        return f"{path}: expected a mapping like {{type: vader}}, got {bad!r}; allowed types: {allowed}"
    # For a tagged union pydantic puts the tag first in the location: ('length', 'target').
    tag = str(loc[0]) if loc else ""
    spec_cls = SPEC_TYPES.get(tag)
    if spec_cls is not None:
        loc = loc[1:]
    where = _join(path, loc)
    if kind == "extra_forbidden" and spec_cls is not None:
        allowed = ", ".join(spec_cls.model_fields)
        return f"{where}: unknown field (value {bad!r}); fields allowed for type {tag!r}: {allowed}"
    if kind == "missing":
        description = ""
        if spec_cls is not None and loc and str(loc[-1]) in spec_cls.model_fields:
            description = f" ({spec_cls.model_fields[str(loc[-1])].description})"
        return f"{where}: required field missing{description}"
    return f"{where}: {error['msg']} (got {bad!r})"


def config_error(e: ValidationError, path: str = "reward") -> ConfigError:
    """A `ConfigError` whose message has one ``path: problem`` clause per pydantic error."""
    return ConfigError("; ".join(describe_error(err, path) for err in e.errors()))


def parse_reward_spec(data: Any, path: str = "reward") -> Any:
    """Validate one reward config (a mapping, or an existing spec) into its spec model.

    Raises `ConfigError` naming the field path (``reward[1].target``), the bad value and what is
    allowed. Returns one of the ``*Spec`` models (typed ``Any`` because ``RewardSpec`` is an
    annotated union, not a class).
    """
    if isinstance(data, _SpecBase):
        return data
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise config_error(e, path) from e
