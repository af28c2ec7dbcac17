"""Tests for langrl.rewards: built-in rewards against hand-computed values, config validation,
user-function loading, the error paths of `score`, and a tiny random classifier built offline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from langrl.errors import ConfigError, RewardError
from langrl.rewards import (
    ContainsReward,
    LengthReward,
    RegexReward,
    RewardFn,
    VaderReward,
    WeightedSum,
    build_reward,
    reward_name,
    score,
)

# ---------------------------------------------------------------- built-in rewards


def test_vader_orders_sentiment_and_matches_library() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    reward = build_reward({"type": "vader"})
    good, bad = "I love this wonderful movie!", "This is a terrible, awful film."
    values = score(reward, ["p", "p"], [good, bad])
    assert values[0] > 0 > values[1]
    expected = SentimentIntensityAnalyzer().polarity_scores(good)["compound"]
    assert values[0] == expected
    assert isinstance(reward, VaderReward) and reward.name == "vader"


def test_length_reward_words_and_chars() -> None:
    words = LengthReward(target=4)
    # -|len - 4| / 4 for 4, 2, 0 and 6 words.
    assert words(["", "", "", ""], ["a b c d", "a b", "", "a b c d e f"]) == [0.0, -0.5, -1.0, -0.5]
    chars = build_reward({"type": "length", "target": 5, "unit": "chars"})
    assert chars(["", ""], ["hello", "hi"]) == [0.0, pytest.approx(-0.6)]


def test_regex_reward() -> None:
    reward = RegexReward(r"answer: \d+")
    assert reward(["", "", ""], ["the answer: 42", "Answer: 42", "no"]) == [1.0, 0.0, 0.0]
    folded = build_reward({"type": "regex", "pattern": r"answer: \d+", "ignore_case": True})
    assert folded([""], ["Answer: 42"]) == [1.0]


def test_contains_reward_any_count_case_and_whole_word() -> None:
    texts = ["A cat and a dog", "the category", "nothing here", "Cat cat CAT"]
    prompts = [""] * len(texts)
    assert ContainsReward(["cat", "dog"])(prompts, texts) == [1.0, 1.0, 0.0, 1.0]
    assert ContainsReward(["cat", "dog"], count=True)(prompts, texts) == [2.0, 1.0, 0.0, 1.0]
    assert ContainsReward(["cat"], ignore_case=True, count=True)(prompts, texts) == [1.0, 1.0, 0.0, 3.0]
    assert ContainsReward(["cat"], whole_word=True)(prompts, texts) == [1.0, 0.0, 0.0, 1.0]
    # Overlapping words count once (longest match wins), and regex characters are literal.
    assert ContainsReward(["good", "goodness"], count=True)([""], ["goodness me"]) == [1.0]
    assert ContainsReward(["a.b"])(["", ""], ["a.b", "axb"]) == [1.0, 0.0]


def test_weighted_sum_hand_computed() -> None:
    reward = build_reward(
        [
            {"type": "length", "target": 2, "weight": 0.5},
            {"type": "regex", "pattern": "yes", "weight": 2.0},
            {"type": "contains", "words": ["no"], "count": True, "weight": -1.0},
        ]
    )
    assert isinstance(reward, WeightedSum)
    # "yes no maybe": length -|3-2|/2 = -0.5; regex 1; contains 1 hit ("no").
    # "no": length -0.5; regex 0; contains 1.
    assert score(reward, ["", ""], ["yes no maybe", "no"]) == pytest.approx(
        [0.5 * -0.5 + 2.0 * 1.0 - 1.0 * 1.0, 0.5 * -0.5 + 0.0 - 1.0]
    )
    assert [name for name, _, _ in reward.components] == ["length", "regex", "contains"]


def test_single_spec_weight_is_applied() -> None:
    reward = build_reward({"type": "regex", "pattern": "x", "weight": 3.0, "name": "has_x"})
    assert reward([""], ["x"]) == [3.0]
    assert reward_name(reward) == "has_x"


def test_builtins_satisfy_protocol() -> None:
    def plain(prompts: list[str], completions: list[str]) -> list[float]:
        return [0.0] * len(completions)

    for reward in (VaderReward(), LengthReward(3), RegexReward("a"), ContainsReward(["a"]), plain):
        assert isinstance(reward, RewardFn)
    assert reward_name(plain).endswith("plain")


# ---------------------------------------------------------------- config validation


def test_bad_type_lists_allowed_types() -> None:
    with pytest.raises(ConfigError) as info:
        build_reward({"type": "sentiment"})
    message = str(info.value)
    assert "reward.type" in message and "'sentiment'" in message
    for allowed in ("vader", "length", "regex", "contains", "classifier", "python"):
        assert allowed in message


def test_validation_errors_name_path_value_and_fix() -> None:
    with pytest.raises(ConfigError, match=r"reward\[1\]\.target: .*greater than 0.*got -3"):
        build_reward([{"type": "vader"}, {"type": "length", "target": -3}])
    with pytest.raises(ConfigError, match=r"reward\.unit: .*'words' or 'chars'.*got 'lines'"):
        build_reward({"type": "length", "target": 3, "unit": "lines"})
    with pytest.raises(ConfigError, match=r"reward\.colour: unknown field.*allowed.*target"):
        build_reward({"type": "length", "target": 3, "colour": "red"})
    with pytest.raises(ConfigError, match=r"reward\.target: required field missing"):
        build_reward({"type": "length"})
    with pytest.raises(ConfigError, match=r"missing field 'type'"):
        build_reward({"target": 3})
    with pytest.raises(ConfigError, match=r"reward\.pattern: .*not a valid regular expression"):
        build_reward({"type": "regex", "pattern": "("})
    with pytest.raises(ConfigError, match="empty list"):
        build_reward([])


# ---------------------------------------------------------------- python rewards

USER_MODULE = """
def brevity(prompts, completions, scale=1.0):
    return [scale / (1 + len(c)) for c in completions]

NOT_A_FUNCTION = 3
"""


def test_python_module_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "langrl_test_user_rewards.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = build_reward(
        {"type": "python", "function": "langrl_test_user_rewards:brevity", "kwargs": {"scale": 2.0}}
    )
    assert score(reward, ["", ""], ["", "abc"]) == [2.0, 0.5]
    assert reward_name(reward) == "python:langrl_test_user_rewards:brevity"


def test_python_file_path(tmp_path: Path) -> None:
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_MODULE)
    reward = build_reward({"type": "python", "function": f"{path}:brevity"})
    assert reward([""], ["a"]) == [0.5]


@pytest.mark.parametrize(
    ("function", "problem"),
    [
        ("no_colon_here", "expected 'module:function'"),
        ("langrl_no_such_module_xyz:f", "module 'langrl_no_such_module_xyz' not found"),
        ("langrl_test_user_rewards2:missing", "attribute 'missing' not found"),
        ("langrl_test_user_rewards2:NOT_A_FUNCTION", "not callable"),
        ("does/not/exist.py:f", "not found"),
    ],
)
def test_python_bad_specs(
    function: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "langrl_test_user_rewards2.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        build_reward({"type": "python", "function": function})
    message = str(info.value)
    assert problem in message and repr(function) in message
    if "exist.py" not in function:
        assert "module:function" in message
    if "missing" in function:
        assert "brevity" in message  # lists what is there


# ---------------------------------------------------------------- score error paths


class Boom:
    """Raises on any completion that mentions "bad"."""

    name = "boom"

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        if any("bad" in c for c in completions):
            raise ValueError("cannot score this")
        return [1.0] * len(completions)


def test_score_raising_reward_names_reward_and_completion() -> None:
    with pytest.raises(RewardError) as info:
        score(Boom(), ["p"] * 3, ["fine", "a bad one", "also bad"])
    message = str(info.value)
    assert "'boom'" in message and "cannot score this" in message
    assert "completion 1" in message and repr("a bad one") in message
    assert isinstance(info.value.__cause__, ValueError)


def test_score_truncates_long_completion() -> None:
    long_text = "bad " + "x" * 5000
    with pytest.raises(RewardError) as info:
        score(Boom(), ["p"], [long_text])
    assert "5004 chars" in str(info.value) and len(str(info.value)) < 600


def test_score_nan_and_non_number() -> None:
    def nan_on_second(prompts: list[str], completions: list[str]) -> list[float]:
        return [0.0, math.nan]

    with pytest.raises(RewardError) as info:
        score(nan_on_second, ["", ""], ["ok", "the culprit"])
    message = str(info.value)
    assert "nan_on_second" in message and "nan" in message
    assert "index 1" in message and repr("the culprit") in message

    def text_value(prompts: list[str], completions: list[str]) -> list[str]:
        return ["0.5"]

    with pytest.raises(RewardError, match="non-number '0.5' at index 0"):
        score(text_value, [""], ["x"])  # type: ignore[arg-type]


def test_score_wrong_length_and_non_sequence() -> None:
    def short(prompts: list[str], completions: list[str]) -> list[float]:
        return [1.0]

    with pytest.raises(RewardError, match=r"'.*short'.*expected 3, got 1"):
        score(short, ["", "", ""], ["a", "b", "c"])

    def scalar(prompts: list[str], completions: list[str]) -> float:
        return 1.0

    with pytest.raises(RewardError, match="expected a list of 2 floats"):
        score(scalar, ["", ""], ["a", "b"])  # type: ignore[arg-type]


def test_score_accepts_tensors_and_component_errors_name_component() -> None:
    def as_tensor(prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([0.25] * len(completions))

    assert score(as_tensor, ["", ""], ["a", "b"]) == [0.25, 0.25]  # type: ignore[arg-type]
    with pytest.raises(RewardError, match=r"'boom'.*'bad'"):
        score(WeightedSum([LengthReward(2), Boom()], [1.0, 1.0]), [""], ["bad"])


# ---------------------------------------------------------------- classifier

LABELS = {0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"}


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT with a word-level tokenizer, saved like a hub download would be."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = "the a movie film was is great good awful bad and i love hate it this".split()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,  # large random weights, so outputs differ visibly between texts
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    folder = tmp_path_factory.mktemp("tiny_classifier")
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TEXTS = ["i love this movie", "this film was awful", "", "great great great " * 40]


def test_classifier_probabilities(tiny_classifier: Path) -> None:
    per_label = [
        score(
            build_reward({"type": "classifier", "model": str(tiny_classifier), "label": i}), [""] * 4, TEXTS
        )
        for i in LABELS
    ]
    for column in zip(*per_label, strict=True):
        assert all(0.0 <= p <= 1.0 for p in column)
        assert sum(column) == pytest.approx(1.0, abs=1e-5)
    by_name = build_reward(
        {
            "type": "classifier",
            "model": str(tiny_classifier),
            "label": "POSITIVE",
            "batch_size": 3,  # padding in another batch must not change a text's score
        }
    )
    assert score(by_name, [""] * 4, TEXTS) == pytest.approx(per_label[1], abs=1e-5)
    truncated = build_reward(
        {"type": "classifier", "model": str(tiny_classifier), "label": 1, "max_length": 4}
    )
    assert score(truncated, [""] * 4, TEXTS)[3] != pytest.approx(per_label[1][3], abs=1e-4)


def test_classifier_logit_and_text_options(tiny_classifier: Path) -> None:
    from langrl.rewards import ClassifierReward

    prob = ClassifierReward(tiny_classifier, "positive", device="cpu")  # case-insensitive fallback
    log_odds = ClassifierReward(tiny_classifier, 1, logit=True, device="cpu")
    p = prob([""] * 2, TEXTS[:2])
    z = log_odds([""] * 2, TEXTS[:2])
    assert z == pytest.approx([math.log(q / (1 - q)) for q in p], abs=1e-4)
    joined = ClassifierReward(tiny_classifier, 1, text="prompt+completion")
    # An empty completion alone tokenizes to nothing here (no [CLS]/[SEP] template): still scored.
    assert 0.0 <= score(prob, [""], [""])[0] <= 1.0
    assert joined(["i love "], ["this movie"]) == pytest.approx(prob([""], ["i love this movie"]), abs=1e-6)


def test_classifier_label_errors(tiny_classifier: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_reward({"type": "classifier", "model": str(tiny_classifier), "label": "HAPPY"})
    message = str(info.value)
    assert "'HAPPY'" in message and all(name in message for name in LABELS.values())
    with pytest.raises(ConfigError, match="out of range"):
        build_reward({"type": "classifier", "model": str(tiny_classifier), "label": 7})
    with pytest.raises(ConfigError, match="not found"):
        build_reward({"type": "classifier", "model": str(tiny_classifier / "nope"), "label": 0})
