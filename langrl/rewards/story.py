"""Story rewards: keyword constraints, a target ending, a sentiment arc, and a repetition penalty.

Each is a pure function of the completion (the prompt is ignored), scored batch by batch like the other
built-in rewards, with a documented range so that weights in a `WeightedSum` can be chosen to balance them:

- `KeywordsReward`: the fraction of the keywords the completion uses, in [0, 1];
- `EndingReward`: ROUGE-L F1 of the completion's last sentence(s) against a target ending, in [0, 1];
- `SentimentArcReward`: how much the VADER sentiment rises (or falls) from the first half to the second,
  in [-1, 1];
- `RepetitionPenalty`: minus the share of the completion's n-grams that repeat, in [-1, 0].

Sentences are split by `sentences`, the halves of a text by `halves`; both are plain functions, tested
by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from langrl.rewards.vader import VaderReward

Arc = Literal["rise", "fall"]

SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s|$)|\n")
"""The end of a sentence: a run of ``.``, ``!``, ``?`` or ``…`` (with any closing quotes or brackets) that is
followed by white space or the end of the text, or a line break. ``3.5`` and ``e.g.x`` do not end one."""


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, empty ones dropped; the last may be unfinished (no end mark).

    ``"It rained. We stayed in! Then"`` -> ``["It rained.", "We stayed in!", "Then"]``. Abbreviations such as
    ``"Mr. Smith"`` are split too: the rule is simple on purpose, so that a reward's value is easy to predict.
    """
    pieces, start = [], 0
    for match in SENTENCE_END.finditer(text):
        pieces.append(text[start:match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces if piece.strip()]


def halves(text: str) -> tuple[str, str]:
    """``text`` cut in two at the sentence boundary nearest its middle word (ties go to the earlier boundary).

    Words are whitespace-separated. A text of one sentence is cut at its middle word instead (the first half
    gets ``n // 2`` of its ``n`` words), so ``"I was sad but now I am happy"`` still has two halves; an empty
    text gives two empty halves.
    """
    parts = sentences(text)
    if len(parts) < 2:
        tokens = text.split()
        middle = len(tokens) // 2
        return " ".join(tokens[:middle]), " ".join(tokens[middle:])
    total = sum(len(part.split()) for part in parts)
    before, best, best_gap = 0, 1, float("inf")
    for cut in range(1, len(parts)):  # cut before parts[cut]
        before += len(parts[cut - 1].split())
        gap = abs(before - total / 2)
        if gap < best_gap:
            best, best_gap = cut, gap
    return " ".join(parts[:best]), " ".join(parts[best:])


class KeywordsReward:
    """Reward = the fraction of ``words`` that occur in the completion as whole words, in [0, 1].

    Each keyword counts once however often it occurs: with ``words = [dragon, castle, storm]`` a completion
    naming the dragon twice and the castle once scores 2/3. "Whole word" means not inside a longer word
    (``cat`` misses ``category``): the keyword may not be preceded or followed by a letter, digit or ``_``.
    A keyword may be a phrase (``ever after``) and is matched literally (regex characters are escaped).
    """

    def __init__(self, words: list[str], ignore_case: bool = True, name: str = "keywords") -> None:
        if not words or any(not w.strip() for w in words):
            raise ValueError(f"keywords reward: words must be a non-empty list of non-empty strings, got {words!r}")
        flags = re.IGNORECASE if ignore_case else 0
        self.words = list(words)
        self.patterns = [re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", flags) for word in words]
        self.name = name

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [sum(1 for p in self.patterns if p.search(text)) / len(self.patterns) for text in completions]


class EndingReward:
    """Reward = ROUGE-L F1 of the completion's last sentences against ``target``, in [0, 1].

    "Last sentences": as many trailing `sentences` of the completion as ``target`` has (one for a one-sentence
    ending such as "And they all lived happily ever after."), joined by a space. ROUGE-L F1 is
    ``2 P R / (P + R)`` with ``P = LCS / len(ending)`` and ``R = LCS / len(target)``, LCS the length of the
    longest common subsequence of tokens. Tokens are those of ``rouge_score``'s
    ``RougeScorer(["rougeL"], use_stemmer=True)``, the scorer `langrl.eval.metrics.rouge` uses: lower-cased runs
    of ASCII letters and digits, Porter-stemmed (other characters are ignored). So the exact ending (in any case,
    with any punctuation) scores 1, an ending sharing no word with ``target`` 0, and an empty completion 0.
    An unfinished last sentence (cut off by ``max_new_tokens``) is what is compared: a story must end to score.
    """

    def __init__(self, target: str, name: str = "ending") -> None:
        # Imported here: rouge_score pulls in nltk (~0.4 s), which only this reward needs.
        from rouge_score import rouge_scorer

        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        if self.scorer.score(target, target)["rougeL"].fmeasure == 0:  # no tokens: nothing could ever match
            raise ValueError(f"ending reward: target = {target!r} has no words (ASCII letters or digits) to compare; "
                             "give an ending sentence, e.g. 'And they all lived happily ever after.'")
        self.target = target
        self.count = max(1, len(sentences(target)))
        self.name = name

    def ending(self, completion: str) -> str:
        """The completion's last ``count`` sentences, joined by a space ("" for an empty completion)."""
        return " ".join(sentences(completion)[-self.count:])

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        # score(target, prediction): the F-measure is symmetric, but P and R are named from the target's side.
        return [float(self.scorer.score(self.target, self.ending(text))["rougeL"].fmeasure) for text in completions]


class SentimentArcReward:
    """Reward = ``(second - first) / 2`` for ``arc = "rise"``, ``(first - second) / 2`` for ``"fall"``, in [-1, 1].

    ``first`` and ``second`` are the VADER compound scores (`VaderReward`, in [-1, 1]) of the completion's
    two `halves`. A story that turns from sad to happy scores near 1 for ``rise``; one whose mood does not
    change scores 0, whatever that mood is (add a `VaderReward` term to also reward the level).
    """

    def __init__(self, arc: Arc = "rise", name: str = "sentiment_arc") -> None:
        if arc not in ("rise", "fall"):
            raise ValueError(f"sentiment_arc reward: arc must be 'rise' or 'fall', got {arc!r}")
        self.arc: Arc = arc
        self.sentiment = VaderReward(name=name)
        self.name = name

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        split = [halves(text) for text in completions]
        first = self.sentiment(prompts, [a for a, _ in split])
        second = self.sentiment(prompts, [b for _, b in split])
        if self.arc == "rise":
            return [(b - a) / 2 for a, b in zip(first, second, strict=True)]
        return [(a - b) / 2 for a, b in zip(first, second, strict=True)]


class RepetitionPenalty:
    """Reward = ``-repetition_rate([completion], n)``: minus the share of the completion's n-grams that repeat
    an earlier n-gram of it, in [-1, 0] (0: no n-gram recurs).

    `langrl.eval.metrics.repetition_rate` is the reported metric, so the penalty and the metric agree: over the
    lower-cased words and punctuation marks of `langrl.eval.metrics.words`, ``(T - U) / T`` for ``T`` n-grams of
    which ``U`` are distinct ("a b c a b c a b c", n = 3: 4 of its 7 trigrams repeat, -4/7). A completion of
    fewer than ``n`` words scores 0; the penalty never reaches -1 (the first n-gram is never a repeat).
    """

    def __init__(self, n: int = 3, name: str = "repetition") -> None:
        if n < 1:
            raise ValueError(f"repetition reward: n = {n}: n-grams need an order of at least 1; pass n >= 1")
        # Imported here, not at the top: langrl.eval's package imports langrl.config, which imports the rewards.
        from langrl.eval.metrics import repetition_rate

        self.rate: Callable[[Sequence[str], int], float] = repetition_rate
        self.n = n
        self.name = name

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        # 0.0 - rate, not -rate: a text without repeats then scores 0.0, not -0.0, in logs.
        return [0.0 - self.rate([text], self.n) for text in completions]
