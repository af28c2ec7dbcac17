"""VADER sentiment: a lexicon-and-rules sentiment score, fast on CPU and needing no model.

The classic target of sentiment-steering experiments (Ziegler et al. 2019 used a learned
classifier; VADER is the dependency-free stand-in). Hutto & Gilbert, "VADER: A Parsimonious
Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM 2014.
"""

from __future__ import annotations

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


class VaderReward:
    """Reward = VADER ``compound`` score of the completion, in [-1, 1] (1 = most positive).

    The prompt is ignored: the reward is for what the policy wrote, not for what it was given.
    """

    def __init__(self, name: str = "vader") -> None:
        self.name = name
        # Built once: the constructor reads the lexicon and emoji files from disk (~10 ms).
        self._analyser = SentimentIntensityAnalyzer()

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [float(self._analyser.polarity_scores(text)["compound"]) for text in completions]
