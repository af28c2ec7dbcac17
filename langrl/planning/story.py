"""Writing a story as planning (RAP-style; Hao et al. 2023): the LM proposes K candidate next sentences, a
reward model scores the partial story, and a planner chooses sentence by sentence. Best-of-n, the peer,
samples n whole stories from the same proposer and keeps the best.

- :class:`StoryState`: the opening and the sentences written so far (immutable, hashable).
- :class:`SentenceProposer`: one batched LM call samples candidate next sentences for several partial
  stories; it counts its calls, the sentences it wrote and the tokens it generated, the budget both methods
  are compared at.
- :class:`StoryModel`: a `langrl.planning.world_models.PlanningModel`. Its actions in a state are the
  proposer's K candidates (sampled once per state and kept, so a planner that returns to a state costs no
  new LM call); a step appends the chosen sentence and is rewarded by the change of the reward model's
  score, so the return of a path telescopes to ``score(story) - score(opening)`` and a partial story's
  score is what a depth-limited search sees. The story ends after ``length`` sentences.
- Leaf values: the partial story's score (`langrl.planning.core.ZeroValue`: the telescoped rewards already
  hold it) or :class:`FinishedScore`, one story finished from the leaf by the proposer and scored.
- :func:`plan_story` writes one story with any planner (MCTS, beam), re-planning before each sentence;
  :func:`best_of_n` is the peer.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from langrl.envs.prompts import encode, left_pad
from langrl.models.lm import LM
from langrl.planning.core import Planner
from langrl.rewards.base import RewardFn
from langrl.rewards.story import sentences
from langrl.rollout.tokens import SamplingConfig, sample

TEMPLATE = "Continue this story in two or three sentences: {opening}"


@dataclass(frozen=True)
class StoryState:
    """A partial story: the opening (the prompt) and the sentences written after it."""

    opening: str
    written: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The written continuation, sentences joined by spaces (what the reward scores)."""
        return " ".join(self.written)

    def then(self, sentence: str) -> StoryState:
        return StoryState(self.opening, (*self.written, sentence))


def first_sentence(text: str) -> str:
    """The first sentence of a sampled continuation (all of it when no sentence ends in it)."""
    found = sentences(text)
    return found[0] if found else ""


@dataclass
class SentenceProposer:
    """Samples next sentences of partial stories from ``lm`` (the chat template around ``template``, the
    written sentences as the start of the answer), ``max_new_tokens`` at most, cut after the first sentence.
    """

    lm: LM
    template: str = TEMPLATE
    max_new_tokens: int = 40
    temperature: float = 1.0
    seed: int = 0
    calls: int = 0
    written: int = 0
    tokens: int = 0
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        device = next(self.lm.model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(self.seed)

    def prompt_ids(self, state: StoryState) -> list[int]:
        tok = self.lm.tokenizer
        ids = encode([self.template.format(opening=state.opening)], tok, chat=True)[0]
        return ids + (tok(state.text, add_special_tokens=False)["input_ids"] if state.written else [])

    def propose(self, states: Sequence[StoryState], k: int) -> list[list[str]]:
        """``k`` sampled next sentences for each state, in one batched call."""
        tok, model = self.lm.tokenizer, self.lm.model
        device = next(model.parameters()).device
        ids, mask = left_pad([self.prompt_ids(s) for s in states], tok.pad_token_id, device)
        config = SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, group_size=k)
        rollout = sample(model, ids, mask, config, tok.eos_token_id, tok.pad_token_id, self.generator)
        texts = tok.batch_decode(rollout.completion_ids, skip_special_tokens=True)  # padded after EOS
        self.calls += 1
        self.written += len(texts)
        self.tokens += int(rollout.completion_mask.sum())
        found = [first_sentence(t) for t in texts]
        return [found[i * k:(i + 1) * k] for i in range(len(states))]


class StoryModel:
    """The planning model of story writing (see the module doc): ``k`` proposed sentences as the actions,
    the change of ``reward``'s score as the reward, done after ``length`` sentences."""

    def __init__(self, proposer: SentenceProposer, reward: RewardFn, length: int = 3, k: int = 4):
        if length < 1 or k < 1:
            raise ValueError(f"length = {length}, k = {k}: both must be >= 1")
        self.proposer, self.reward, self.length, self.k = proposer, reward, length, k
        self.proposals: dict[Hashable, list[str]] = {}
        self.scores: dict[Hashable, float] = {}

    def actions(self, state: StoryState) -> Sequence[str]:
        key = self.key(state)
        if key not in self.proposals:  # distinct non-empty candidates in the order sampled ([""] if none)
            found = [s for s in dict.fromkeys(self.proposer.propose([state], self.k)[0]) if s]
            self.proposals[key] = found or [""]
        return self.proposals[key]

    def score(self, state: StoryState) -> float:
        key = self.key(state)
        if key not in self.scores:
            self.scores[key] = float(self.reward([state.opening], [state.text])[0]) if state.written else 0.0
        return self.scores[key]

    def step(self, state: StoryState, action: str) -> tuple[StoryState, float, bool]:
        nxt = state.then(action)
        return nxt, self.score(nxt) - self.score(state), len(nxt.written) >= self.length

    def key(self, state: StoryState) -> Hashable:
        return (state.opening, state.written)

    def observation(self, state: StoryState) -> str:
        return f"{state.opening} {state.text}".strip()


@dataclass
class FinishedScore:
    """A leaf's value as in classic MCTS rollouts: the story finished from ``state`` by ``story``'s proposer,
    one sampled sentence a step (each counts as written), scored: ``score(finished) - score(state)``."""

    story: StoryModel

    def __call__(self, model: object, state: StoryState, rng: np.random.Generator) -> float:
        finished = state
        while len(finished.written) < self.story.length:
            finished = finished.then(self.story.proposer.propose([finished], 1)[0][0])
        return self.story.score(finished) - self.story.score(state)


@dataclass
class Story:
    """A finished story and what writing it cost."""

    opening: str
    text: str
    reward: float
    calls: int
    sentences_written: int
    tokens: int
    seconds: float


def plan_story(planner: Planner, model: StoryModel, opening: str, rng: np.random.Generator) -> Story:
    """Write ``model.length`` sentences after ``opening``, each chosen by ``planner`` (which imagines with
    ``planner.model``, ``model`` behind its cache)."""
    p = model.proposer
    c0, w0, t0, start = p.calls, p.written, p.tokens, time.perf_counter()
    state, done = StoryState(opening), False
    while not done:
        action = planner.plan(state, rng).action
        state, _, done = model.step(state, action)
    return Story(opening, state.text, model.score(state), p.calls - c0, p.written - w0, p.tokens - t0,
                 time.perf_counter() - start)


def best_of_n(proposer: SentenceProposer, reward: RewardFn, opening: str, n: int, length: int = 3) -> Story:
    """Sample ``n`` stories of ``length`` sentences sentence by sentence (one batched call per sentence) and
    keep the one ``reward`` scores highest (ties: the first)."""
    if n < 1:
        raise ValueError(f"n = {n}: must be >= 1")
    c0, w0, t0, start = proposer.calls, proposer.written, proposer.tokens, time.perf_counter()
    states = [StoryState(opening)] * n
    for _ in range(length):
        states = [s.then(nxt[0]) for s, nxt in zip(states, proposer.propose(states, 1), strict=True)]
    scores = [float(r) for r in reward([opening] * n, [s.text for s in states])]
    best = int(np.argmax(scores))
    return Story(opening, states[best].text, scores[best], proposer.calls - c0, proposer.written - w0,
                 proposer.tokens - t0, time.perf_counter() - start)


__all__ = ["FinishedScore", "SentenceProposer", "Story", "StoryModel", "StoryState", "best_of_n", "first_sentence",
           "plan_story"]
