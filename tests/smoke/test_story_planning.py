"""Story writing as planning (langrl.planning.story) on the tiny in-process LM with hand-made rewards."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from langrl.models import load_lm
from langrl.planning.core import ZeroValue
from langrl.planning.mcts import MCTS
from langrl.planning.story import (
    FinishedScore,
    SentenceProposer,
    StoryModel,
    StoryState,
    best_of_n,
    first_sentence,
    plan_story,
)
from langrl.planning.world_models import cached


def letters(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """A reward that any tiny model's text can earn: the number of letters written, per 100."""
    return [sum(ch.isalpha() for ch in c) / 100 for c in completions]


@pytest.fixture(scope="module")
def lm():
    return load_lm("tiny", seed=0)


def story_model(lm, k: int = 3, length: int = 2, seed: int = 0) -> StoryModel:
    return StoryModel(SentenceProposer(lm, max_new_tokens=8, seed=seed), letters, length=length, k=k)


def test_first_sentence_cuts_after_the_first_end_mark():
    assert first_sentence(" It rained. We stayed in!") == "It rained."
    assert first_sentence("no end mark here") == "no end mark here"
    assert first_sentence("   ") == ""


def test_proposals_are_sampled_once_per_state_and_rewards_telescope(lm):
    model = story_model(lm)
    root = StoryState("Once upon a time.")
    first = model.actions(root)
    calls = model.proposer.calls
    assert model.actions(root) == first and model.proposer.calls == calls  # kept, no new LM call
    assert 1 <= len(first) <= 3 and len(set(first)) == len(first)
    total, state, done = 0.0, root, False
    while not done:
        state, reward, done = model.step(state, model.actions(state)[0])
        total += reward
    assert len(state.written) == 2
    assert total == pytest.approx(letters([], [state.text])[0])  # the return is the final story's score


def test_mcts_story_keeps_the_best_scored_sentence_and_is_deterministic(lm):
    def write(seed: int):
        model = story_model(lm, k=4, length=1, seed=seed)
        planner = MCTS(cached(model, 1000), simulations=8, value=ZeroValue(), max_depth=1,
                       unvisited_value=float("inf"))
        story = plan_story(planner, model, "A dog barked.", np.random.default_rng(seed))
        return model, story

    model, story = write(0)
    candidates = model.actions(StoryState("A dog barked."))
    assert story.text == max(candidates, key=lambda c: letters([], [c])[0])
    assert story.calls == 1 and story.sentences_written == 4  # one batched call of K sentences
    assert write(0)[1].text == story.text


def test_best_of_n_keeps_the_highest_scored_of_n_stories(lm):
    proposer = SentenceProposer(lm, max_new_tokens=8, seed=1)
    story = best_of_n(proposer, letters, "A cat sat.", n=5, length=2)
    assert story.calls == 2 and story.sentences_written == 10
    assert story.reward == pytest.approx(letters([], [story.text])[0])
    with pytest.raises(ValueError, match="n = 0"):
        best_of_n(proposer, letters, "A cat sat.", n=0)


def test_finished_score_values_a_leaf_by_one_story_finished_from_it(lm):
    model = story_model(lm, k=2, length=3)
    leaf = StoryState("A bird sang.").then("It flew.")
    written = model.proposer.written
    value = FinishedScore(model)(None, leaf, np.random.default_rng(0))
    assert model.proposer.written == written + 2  # the two sentences that finish the story, one call each
    finished = [key for key in model.scores if len(key[1]) == 3]
    assert len(finished) == 1
    assert value == pytest.approx(model.scores[finished[0]] - model.score(leaf))
