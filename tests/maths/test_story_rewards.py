"""Tier 1: the story rewards of `langrl.rewards.story` (keywords, ending, sentiment arc, repetition) against values
worked out by hand, their config errors (one line naming the field, the value and the fix), and the bundled
story config and openings."""

from __future__ import annotations

from pathlib import Path

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from langrl.config import load_config
from langrl.errors import ConfigError
from langrl.eval.metrics import repetition_rate
from langrl.rewards import (
    EndingReward,
    KeywordsReward,
    RepetitionPenalty,
    RewardFn,
    SentimentArcReward,
    WeightedSum,
    build_reward,
    score,
)
from langrl.rewards.story import halves, sentences

ROOT = Path(__file__).resolve().parents[2]
HAPPY_END = "And they all lived happily ever after."


def prompts_for(texts: list[str]) -> list[str]:
    return ["Continue this story:"] * len(texts)


# ---------------------------------------------------------------- sentences and halves


def test_sentences_split_after_end_marks_and_line_breaks() -> None:
    assert sentences("It rained. We stayed in! Then") == ["It rained.", "We stayed in!", "Then"]
    # Closing quotes stay with their sentence; "3.5" ends nothing; an ellipsis and a line break do.
    assert sentences('He said "Go." Then 3.5 left\u2026  ok\nNext') == ['He said "Go."', "Then 3.5 left\u2026", "ok",
                                                                   "Next"]
    assert sentences("  ") == [] and sentences("Why?!") == ["Why?!"]


def test_halves_cut_at_the_sentence_boundary_nearest_the_middle_word() -> None:
    # 2 + 4 + 2 words: the boundaries after 2 and 6 words are both 2 from the middle (4): the earlier wins.
    assert halves("A b. C d e f. G h.") == ("A b.", "C d e f. G h.")
    # 1 + 1 + 6 words: after 2 words is 2 from the middle (4), after 1 word 3.
    assert halves("A. B. C d e f g h.") == ("A. B.", "C d e f g h.")
    # One sentence of 8 words: cut at the middle word, 4 and 4; an odd count gives the first half the fewer.
    assert halves("I was sad but now I am happy") == ("I was sad but", "now I am happy")
    assert halves("one two three") == ("one", "two three")
    assert halves("") == ("", "")


# ---------------------------------------------------------------- keywords


def test_keywords_fraction_of_whole_words() -> None:
    reward = KeywordsReward(["dragon", "castle", "storm"])
    texts = [
        "The Dragon flew over the castle. The dragon slept.",  # dragon (twice: counts once) and castle: 2/3
        "A stormy night near the castles.",  # stormy and castles are not storm and castle: 0/3
        "Storm, castle, DRAGON!",  # all three, any case: 3/3
        "",
    ]
    assert reward(prompts_for(texts), texts) == pytest.approx([2 / 3, 0.0, 1.0, 0.0])


def test_keywords_case_phrases_and_literal_characters() -> None:
    cased = build_reward({"type": "keywords", "words": ["dragon", "castle", "storm"], "ignore_case": False})
    assert cased([""], ["The Dragon flew over the castle."]) == pytest.approx([1 / 3])  # only 'castle'
    phrase = KeywordsReward(["ever after", "c++"])
    assert phrase(["", ""], ["Happily ever after, in C++.", "ever, after; cxx"]) == [1.0, 0.0]


# ---------------------------------------------------------------- ending


def test_ending_exact_match_is_one_and_disjoint_is_zero() -> None:
    reward = build_reward({"type": "ending", "target": HAPPY_END})
    texts = [
        HAPPY_END,
        "The king smiled at last. and they all lived HAPPILY ever after",  # only the last sentence counts
        "The dog barked at the moon.",  # no word in common
        "And they all lived happily ever after. The end.",  # the last sentence is 'The end.': no word in common
        "",
    ]
    assert score(reward, prompts_for(texts), texts) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_ending_partial_match_is_rouge_l_f1_by_hand() -> None:
    # Stemmed tokens: ending [they, live, happili], target [and, they, all, live, happili, ever, after].
    # LCS = 3: P = 3/3, R = 3/7, F1 = 2 P R / (P + R) = (6/7) / (10/7) = 0.6.
    assert EndingReward(HAPPY_END)([""], ["Once there was a frog. They lived happily."]) == [pytest.approx(0.6)]
    # A two-sentence target is compared with the last two sentences.
    two = EndingReward("The end. Goodnight.")
    assert two([""], ["A frog sang. The end. Goodnight."]) == [pytest.approx(1.0)]


# ---------------------------------------------------------------- sentiment arc


SAD_THEN_HAPPY = "I was sad and lonely. Everything went wrong. Then a friend came and I was happy."


def test_sentiment_arc_rises_on_sad_then_happy_and_falls_on_the_reverse() -> None:
    rise = build_reward({"type": "sentiment_arc", "arc": "rise"})
    fall = build_reward({"type": "sentiment_arc", "arc": "fall"})
    happy_then_sad = "Then a friend came and I was happy. I was sad and lonely. Everything went wrong."
    texts = [SAD_THEN_HAPPY, happy_then_sad]
    up, down = rise(prompts_for(texts), texts)
    assert up > 0.25 and down < -0.25
    assert fall(prompts_for(texts), texts) == pytest.approx([-up, -down])
    # The definition: VADER compound of each half (cut after the second sentence, 8 of 17 words), halved.
    compound = SentimentIntensityAnalyzer().polarity_scores
    first, second = "I was sad and lonely. Everything went wrong.", "Then a friend came and I was happy."
    assert halves(SAD_THEN_HAPPY) == (first, second)
    assert up == pytest.approx((compound(second)["compound"] - compound(first)["compound"]) / 2)


def test_sentiment_arc_of_an_unchanging_or_empty_text_is_zero() -> None:
    reward = SentimentArcReward("rise")
    assert reward(["", ""], ["The box is red. The box is red.", ""]) == [0.0, 0.0]


# ---------------------------------------------------------------- repetition


def test_repetition_penalty_by_hand() -> None:
    # Trigrams of a b c a b c a b c: abc bca cab abc bca cab abc, 7 in all, 3 distinct: 4 repeat.
    reward = build_reward({"type": "repetition"})
    assert reward([""], ["a b c a b c a b c"]) == [pytest.approx(-4 / 7)]
    assert RepetitionPenalty(n=1)([""], ["a a b"]) == [pytest.approx(-1 / 3)]  # unigrams a a b: one repeat
    # No repeated trigram, or fewer than 3 words: 0.0 (not -0.0).
    assert [str(v) for v in reward(["", ""], ["the cat sat on the mat", "a a"])] == ["0.0", "0.0"]


def test_repetition_penalty_is_minus_the_reported_metric() -> None:
    texts = ["Once upon a time, once upon a time, once upon a time.", "The king ruled. The king ruled wisely."]
    for n in (1, 2, 3, 4):
        assert RepetitionPenalty(n)(prompts_for(texts), texts) == [-repetition_rate([t], n) for t in texts]


# ---------------------------------------------------------------- together, and the protocol


def test_story_rewards_combine_in_a_weighted_sum() -> None:
    reward = build_reward([
        {"type": "sentiment_arc", "arc": "rise", "weight": 1.0},
        {"type": "ending", "target": HAPPY_END, "weight": 0.5},
        {"type": "repetition", "n": 3, "weight": 1.0},
        {"type": "keywords", "words": ["king", "dragon"], "weight": 0.25},
    ])
    assert isinstance(reward, WeightedSum)
    assert [name for name, _, _ in reward.components] == ["sentiment_arc", "ending", "repetition", "keywords"]
    text = "a b c a b c a b c"  # no sentiment, no ending word, 4/7 repeated trigrams, no keyword
    assert score(reward, [""], [text]) == [pytest.approx(-4 / 7)]
    text = f"The king was sad. {HAPPY_END}"  # arc > 0; ending 1; no repeats; keywords 1/2
    arc = SentimentArcReward()([""], [text])[0]
    assert arc > 0
    assert score(reward, [""], [text]) == [pytest.approx(arc + 0.5 * 1.0 + 0.0 + 0.25 * 0.5)]


def test_story_rewards_satisfy_the_protocol_and_carry_their_names() -> None:
    built = [
        build_reward({"type": "keywords", "words": ["a"]}),
        build_reward({"type": "ending", "target": HAPPY_END, "name": "happy_end"}),
        build_reward({"type": "sentiment_arc"}),
        build_reward({"type": "repetition"}),
    ]
    for reward in built:
        assert isinstance(reward, RewardFn)
    assert [getattr(r, "name", None) for r in built] == ["keywords", "happy_end", "sentiment_arc", "repetition"]


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "keywords", "words": []}, r"^reward\.words: List should have at least 1 item.*\(got \[\]\)$"),
        ({"type": "keywords", "words": ["cat", "Cat"]},
         r"^reward\.words: .*'Cat' is listed twice \(ignoring case: set ignore_case: false.*list each keyword once"),
        ({"type": "keywords", "words": ["dragon", " "]}, r"^reward\.words: .*' ' is blank; give words or phrases"),
        ({"type": "ending"}, r"^reward\.target: required field missing \(The ending sentence"),
        ({"type": "ending", "target": "..."},
         r"^reward\.target: .*has no words.*give an ending sentence, e\.g\. 'And they.*\(got '\.\.\.'\)$"),
        ({"type": "sentiment_arc", "arc": "up"}, r"^reward\.arc: Input should be 'rise' or 'fall' \(got 'up'\)$"),
        ({"type": "repetition", "n": 0}, r"^reward\.n: Input should be greater than or equal to 1 \(got 0\)$"),
        ({"type": "repetition", "order": 3},
         r"^reward\.order: unknown field \(value 3\); fields allowed for type 'repetition': weight, name, type, n$"),
        ([{"type": "vader"}, {"type": "sentiment_arc", "arc": "rising"}], r"^reward\[1\]\.arc: .*'rise' or 'fall'"),
    ],
)
def test_config_errors_are_one_line_naming_field_value_and_fix(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_reward(spec)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_case_sensitive_keywords_may_differ_by_case_only() -> None:
    reward = build_reward({"type": "keywords", "words": ["Cat", "cat"], "ignore_case": False})
    assert reward([""], ["The cat sat."]) == [0.5]


def test_rewards_built_by_hand_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        KeywordsReward([])
    with pytest.raises(ValueError, match="has no words"):
        EndingReward("?!")
    with pytest.raises(ValueError, match="'rise' or 'fall'"):
        SentimentArcReward("up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass n >= 1"):
        RepetitionPenalty(0)


# ---------------------------------------------------------------- the bundled task


def test_story_openings_are_bundled() -> None:
    lines = (ROOT / "langrl" / "data" / "story_openings.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Once upon a time, there was a king who ruled a large kingdom."
    assert len(lines) >= 60 and all(line.strip() == line and line for line in lines)
    assert len(set(lines)) == len(lines)


def test_story_config_parses_and_builds() -> None:
    cfg = load_config(ROOT / "configs" / "story.yaml")
    assert cfg.kind == "lm" and cfg.model == "smollm2-135m-instruct" and cfg.algorithm == "grpo"
    assert cfg.prompts.file == "story_openings.txt" and cfg.prompts.eval_fraction > 0
    assert "{item}" in cfg.prompts.template and cfg.sampling.max_new_tokens == 48
    assert isinstance(cfg.reward, list)
    assert [(r.type, r.weight) for r in cfg.reward] == [("sentiment_arc", 1.0), ("ending", 1.0), ("repetition", 1.0)]
    reward = build_reward(cfg.reward)
    assert score(reward, [""], [f"The king was sad. {HAPPY_END}"])[0] > 1.0
