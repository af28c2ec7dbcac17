"""The common ground of the dialogue environments: a simulated user who holds a hidden target.

:class:`SimulatedUserEnv` is a Gymnasium text environment in the style of LMRL-Gym (Abdulhai et al. 2023): the
agent is the questioner, a rule-based simulated user answers.

- ``reset(seed=..., options=None)`` draws a hidden target (``options={"target": name}`` picks one) and returns
  the user's opening message and ``info``.
- ``step(utterance)`` returns the user's reply, the reward, ``terminated`` (the target was guessed),
  ``truncated`` (``max_turns`` turns were used without success) and ``info``.
- ``info`` always holds ``turn`` (turns taken), ``target`` (the hidden answer: for evaluation only, a policy must
  not read it), ``success`` and ``candidates`` (how many targets are still consistent with every answer so far);
  after a step also ``gain`` (the turn's information gain in bits) and ``kind`` (``question``, ``guess`` or
  ``unclear``; a user may have its own, e.g. ``reply``).
- reward of a turn = ``success_reward`` if it guessed the target, minus ``question_cost``, plus
  ``shaping * gain``, where gain = log2(candidates before / candidates after) is exact, since the simulated user
  knows every target's answers. A turn the user cannot answer gains 0 bits.

Subclasses say who the targets are (:attr:`SimulatedUserEnv.target_names`), what the user opens with and how the
user replies (:meth:`SimulatedUserEnv.respond`: the reply's text and which targets stay consistent with it).
A user with state of its own clears it in :meth:`SimulatedUserEnv.begin`; one whose rewards are not the guessing
game's sets :attr:`Reply.reward` (the turn's reward, replacing the formula above) and :attr:`Reply.ends` (the
episode ends without success, e.g. the user leaves), and adds its own ``info`` keys by overriding
:meth:`SimulatedUserEnv.info`.
The text helpers here (:func:`normalize`, :class:`PhraseMatcher`, :func:`split_guess`) are what both rule-based
users read questions with.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar

import gymnasium as gym
import numpy as np

from langrl.envs.text.spaces import text_space
from langrl.errors import ConfigError

T = TypeVar("T")

ARTICLES = frozenset({"a", "an", "the", "some"})
FILLERS_BEFORE = frozenset({"so", "then", "ok", "okay", "well", "hmm", "alright", "and", "right", "now", "oh"})
FILLERS_AFTER = frozenset({"then", "perhaps", "maybe", "please", "right", "now", "by", "any", "chance"})
# Openings of a guess ("Is it a cat?", "My guess is the piano", "I think it's Paris"), apostrophes removed.
GUESS_PREFIXES = frozenset({
    "is it", "is this", "is that", "could it be", "can it be", "might it be", "would it be", "must it be", "it is",
    "its", "it must be", "it might be", "it could be", "is it maybe", "is it perhaps", "is the answer",
    "the answer is", "answer", "my answer is", "my final answer is", "final answer", "guess", "my guess is",
    "my final guess is", "final guess", "i guess", "i guess it is", "i guess its", "i think it is", "i think its",
    "i bet it is", "i bet its", "i say", "are you thinking of", "are you thinking about", "you are thinking of",
    "youre thinking of",
})
# Prefixes after which a bare colour word is a question about colour, not a guess ("Is it orange?").
COLOUR_PREFIXES = frozenset({"is it", "is this", "is that", "it is", "its"})


def normalize(text: str) -> list[str]:
    """The words of ``text``: lower case, apostrophes dropped ("it's" -> "its"), anything but letters and digits
    a separator ("T-shirt" -> "t shirt")."""
    text = str(text).lower().replace("'", "").replace("\u2019", "")
    return re.findall(r"[a-z0-9]+", text)


def plural_forms(word: str) -> list[str]:
    """Regular plurals of ``word`` (dog -> dogs, bus -> buses, fly -> flies, knife -> knives)."""
    forms = [word + "s", word + "es"]
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.append(word[:-1] + "ies")
    if word.endswith("fe"):
        forms.append(word[:-2] + "ves")
    elif word.endswith("f"):
        forms.append(word[:-1] + "ves")
    return forms


class PhraseMatcher(Generic[T]):
    """Finds phrases in a list of words, longest phrase first and without overlaps; each phrase maps to a value.

    Phrases are normalized like questions (:func:`normalize`); with ``plurals`` the last word of a phrase also
    matches its regular plurals, unless that plural is a phrase of its own ("clothes" vs "cloth").
    """

    def __init__(self, table: Iterable[tuple[str, T]], plurals: bool = True):
        self.table: dict[tuple[str, ...], T] = {}
        for phrase, value in table:
            key = tuple(normalize(phrase))
            if key and key not in self.table:
                self.table[key] = value
        if plurals:
            for key, value in list(self.table.items()):
                for form in plural_forms(key[-1]):
                    self.table.setdefault((*key[:-1], form), value)
        self.longest = max((len(k) for k in self.table), default=0)

    def find(self, words: Sequence[str], blocked: Iterable[int] = ()) -> list[tuple[int, int, T]]:
        """``(start, end, value)`` of every match in ``words``, sorted by start; positions in ``blocked`` (and
        words already matched by a longer phrase) are skipped."""
        used = set(blocked)
        found: list[tuple[int, int, T]] = []
        for length in range(min(self.longest, len(words)), 0, -1):
            for start in range(len(words) - length + 1):
                span = range(start, start + length)
                key = tuple(words[start:start + length])
                if key in self.table and not used.intersection(span):
                    found.append((start, start + length, self.table[key]))
                    used.update(span)
        return sorted(found, key=lambda match: match[0])

    def phrases(self) -> list[str]:
        """Every phrase this matcher knows (plurals included), as normalized text."""
        return [" ".join(key) for key in self.table]


def strip_fillers(words: Sequence[str]) -> list[str]:
    """``words`` without leading ("so", "ok") and trailing ("then", "please") filler words."""
    start, end = 0, len(words)
    while start < end and words[start] in FILLERS_BEFORE:
        start += 1
    while end > start and words[end - 1] in FILLERS_AFTER:
        end -= 1
    return list(words[start:end])


def split_guess(words: Sequence[str], prefixes: Iterable[str] = GUESS_PREFIXES) -> Iterator[tuple[str, bool, str]]:
    """Every way to read ``words`` as ``<guess opening> [article] <thing>``: ``(opening, has_article, thing)``,
    longest opening (of ``prefixes``) first, the empty opening last (so "cat?" reads as a guess of "cat")."""
    text = " ".join(strip_fillers(words))
    for prefix in (*sorted(set(prefixes), key=lambda p: (-len(p), p)), ""):
        if prefix and not text.startswith(prefix + " "):
            continue
        rest = text[len(prefix):].strip()
        first, _, tail = rest.partition(" ")
        if first in ARTICLES and tail:
            yield prefix, True, tail
        if rest:
            yield prefix, False, rest


def load_data(name: str) -> Any:
    """The JSON file ``name`` of langrl's bundled data folder."""
    return json.loads((resources.files("langrl") / "data" / name).read_text(encoding="utf-8"))


@cache
def cached_data(name: str) -> Any:
    """:func:`load_data`, read once per process (callers must not modify the result)."""
    return load_data(name)


# --- checking constructor arguments ----------------------------------------------------------------------------


def check_int(name: str, value: Any, low: int, example: int) -> int:
    """``value`` as an int >= ``low``, else a `ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} = {value!r}: must be a whole number >= {low}; give e.g. {name}={example}")
    return int(value)


def check_float(name: str, value: Any, example: float, non_negative: bool = False) -> float:
    """``value`` as a finite float (>= 0 with ``non_negative``), else a `ConfigError` naming ``name``."""
    bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    if bad or (non_negative and value < 0):
        kind = "a finite number >= 0" if non_negative else "a finite number"
        raise ConfigError(f"{name} = {value!r}: must be {kind}; give e.g. {name}={example}")
    return float(value)


def pick_subset(name: str, value: Any, names: Sequence[str], lookup: Mapping[str, int], order_seed: int,
                noun: str) -> list[int]:
    """Indices into ``names`` for a curriculum argument: ``None`` (all), an int k (the first k of a fixed order
    shuffled with ``order_seed``) or a list of names (``lookup`` maps normalized names and aliases to indices)."""
    total = len(names)
    if value is None:
        return list(range(total))
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= total:
            raise ConfigError(f"{name} = {value!r}: must be between 1 and {total}; give e.g. {name}={min(10, total)} "
                              f"or a list of {noun} names")
        order = np.random.default_rng(order_seed).permutation(total)
        return [int(i) for i in order[:value]]
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{name} = {value!r}: must be a number of {noun}s or a non-empty list of {noun} names; "
                          f"give e.g. {name}=10 or {name}={list(names[:3])!r}")
    picked: list[int] = []
    for item in value:
        index = lookup.get(" ".join(normalize(str(item))))
        if index is None:
            raise ConfigError(f"{name} = {value!r}: {item!r} is not a known {noun}; give names such as "
                              f"{', '.join(names[:5])}")
        if index in picked:
            raise ConfigError(f"{name} = {value!r}: {names[index]!r} is listed twice; list each {noun} once")
        picked.append(index)
    return picked


# --- the environment -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the simulated user says to one utterance.

    ``keep(i)`` is whether target ``i`` (an index into :attr:`SimulatedUserEnv.target_names`) is still consistent
    with the reply; ``None`` when the reply carries no information. ``solved``: the utterance guessed the target
    (success; the episode ends). ``ends``: the episode ends here without success (the user leaves). ``reward``:
    the turn's reward when the user decides it, replacing ``success_reward`` - ``question_cost`` + shaping.
    """

    text: str
    keep: Callable[[int], bool] | None = None
    solved: bool = False
    kind: str = "question"
    ends: bool = False
    reward: float | None = None


class SimulatedUserEnv(gym.Env[str, str], ABC):
    """A multi-turn text environment: the agent asks, a rule-based simulated user who holds a hidden target
    answers (see the module docstring for reset, step, info and reward)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, *, max_turns: int = 20, success_reward: float = 1.0, question_cost: float = 0.05,
                 shaping: float = 0.0):
        self.max_turns = check_int("max_turns", max_turns, 1, 20)
        self.success_reward = check_float("success_reward", success_reward, 1.0)
        self.question_cost = check_float("question_cost", question_cost, 0.05, non_negative=True)
        self.shaping = check_float("shaping", shaping, 0.1, non_negative=True)
        self.observation_space = text_space()
        self.action_space = text_space()
        self.target: int | None = None
        self.candidates: list[int] = []
        self.turn = 0
        self.success = False
        self.done = True

    @property
    @abstractmethod
    def target_names(self) -> list[str]:
        """The names of this environment's possible targets (the index of a name is its target id)."""

    @abstractmethod
    def opening(self) -> str:
        """The user's first message of an episode."""

    @abstractmethod
    def respond(self, utterance: str, target: int) -> Reply:
        """The user's reply to ``utterance`` when the hidden target is ``target``."""

    def begin(self) -> None:
        """Clear per-episode state: ``reset`` calls it once the target is drawn, before :meth:`opening`."""

    def target_index(self, name: str) -> int:
        """The target id of ``name`` (case and punctuation ignored); a `ConfigError` when there is none."""
        wanted = normalize(name)
        for i, candidate in enumerate(self.target_names):
            if normalize(candidate) == wanted:
                return i
        raise ConfigError(f"options['target'] = {name!r}: not one of this environment's {len(self.target_names)} "
                          f"targets; give one of {', '.join(self.target_names[:5])}, ...")

    def info(self, gain: float | None = None, kind: str | None = None) -> dict[str, Any]:
        """A fresh ``info`` dict for the current state."""
        assert self.target is not None
        info: dict[str, Any] = {"turn": self.turn, "target": self.target_names[self.target], "success": self.success,
                                "candidates": len(self.candidates)}
        if gain is not None:
            info["gain"] = gain
            info["kind"] = kind
        return info

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        if options and options.get("target") is not None:
            self.target = self.target_index(str(options["target"]))
        else:
            self.target = int(self.np_random.integers(len(self.target_names)))
        self.candidates = list(range(len(self.target_names)))
        self.turn, self.success, self.done = 0, False, False
        self.begin()
        return self.opening(), self.info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.target is None or self.done:
            raise RuntimeError(f"{type(self).__name__}.step after the episode ended (or before reset); call reset")
        target = self.target
        reply = self.respond(str(action), target)
        before = len(self.candidates)
        if reply.keep is not None:
            self.candidates = [c for c in self.candidates if reply.keep(c)]
        assert target in self.candidates, "a reply ruled out the hidden target"
        gain = math.log2(before / len(self.candidates))
        self.turn += 1
        self.success = reply.solved
        terminated = reply.solved or reply.ends
        truncated = not terminated and self.turn >= self.max_turns
        self.done = terminated or truncated
        if reply.reward is not None:
            reward = reply.reward
        else:
            reward = self.success_reward * terminated - self.question_cost + self.shaping * gain
        return reply.text, float(reward), bool(terminated), bool(truncated), self.info(gain, reply.kind)
