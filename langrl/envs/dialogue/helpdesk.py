"""Help desk: a simulated user with a scripted goal gives rule-based feedback on the agent's replies.

The "dialogue system trained from user feedback" setting: the user opens with a problem ("My printer shows
error E3"), the agent (the help-desk assistant) replies, and the user says whether the reply helped. The goals are
shipped in ``langrl/data/helpdesk_goals.json`` (47 problems). Each goal has an ``opening``, ``required`` keyword
groups (the facts or steps a reply must contain; any phrase of a group counts, e.g. ``[["restart", "reboot"],
["paper jam", "jammed"]]``), one ``followups`` line per group (what the user says while that group is still
missing: the first missing group's line is used), optional ``forbidden`` phrases (added to the file's global ones:
rudeness such as "not my problem") and an optional ``thanks`` line.

Phrases are matched on normalized words (:func:`langrl.envs.dialogue.base.normalize`), as a run of whole words;
the last word of a phrase may also be inflected ("restart" matches "restarting", "restarted", "restarts").
Negation is not understood ("don't restart" covers "restart"); goals word their groups and forbidden phrases
so that this rarely matters. The user's rules for one reply, first match wins:

- a **forbidden** phrase -> ``leaves``: "I won't do that. Goodbye." (terminated, failure, reward
  ``-leave_penalty``).
- a reply of more than ``max_words`` words counts as useless (keyword stuffing is not an answer).
- every group covered -> ``satisfied``: the goal's thanks (terminated, success, reward ``success_reward``).
- at least one new group covered -> ``helped``: "Thanks, that helped. " plus the first missing group's follow-up
  (reward ``progress_reward`` * newly covered groups / all groups).
- nothing new -> ``repeats``: the user repeats the problem (the opening, or the current follow-up once something
  helped), more annoyed each time (reward ``-annoyance_cost``); the ``patience``-th useless reply in a row ->
  ``leaves``: "This isn't helping. I give up, goodbye." (terminated, failure, reward ``-leave_penalty``).

``max_turns`` turns without success truncate the episode. The opening and follow-ups never contain a phrase of
their own goal (a test checks it), so parroting the user gains nothing.

``split``: the goals are split by a fixed rule, every 5th goal of the file (index 4, 9, 14, ...) held out:
``train`` (the default) has the others, ``test`` the held-out ones, ``all`` every goal. Training on ``train`` and
evaluating on ``test`` measures generalisation to unseen user goals.

``expert_policy()`` is the scripted expert (:class:`HelpDeskExpert`): it knows the goal and names one missing step
a turn, so it satisfies every user; ``langrl eval configs/helpdesk.yaml --model expert`` plays it, and
``python -m langrl.agents.reply_feedback ... --expert`` logs its dialogues as supervised data.

``info`` holds the base keys (``target`` is the goal id; ``candidates`` is the number of goals in the split, since
the user states the problem outright; ``gain`` is always 0 and ``kind`` is ``reply``), plus ``covered`` and
``remaining`` (group counts) and, after a step, ``feedback`` (``helped``, ``satisfied``, ``repeats`` or
``leaves``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from langrl.envs.dialogue.base import (
    Reply,
    SimulatedUserEnv,
    cached_data,
    check_float,
    check_int,
    normalize,
    plural_forms,
)
from langrl.envs.text.spaces import CHARSET
from langrl.errors import ConfigError

DATA_FILE = "helpdesk_goals.json"
SPLITS = ("train", "test", "all")
HELD_OUT_EVERY = 5  # goal i is held out when i % 5 == 4
FEEDBACKS = ("helped", "satisfied", "repeats", "leaves")
HELPED = "Thanks, that helped. "
THANKS = "That fixed it, thank you! I'm satisfied."
# More annoyed with each useless reply in a row (the last line repeats).
ANNOYED = ("Sorry, that doesn't help. ", "That still doesn't help! ", "Please, this is getting frustrating. ")
TOO_LONG = "That's far too long, I can't follow it. "
GIVES_UP = "This isn't helping. I give up, goodbye."
REFUSES = "I won't do that. Goodbye."

Phrase = tuple[str, ...]


def word_forms(word: str) -> frozenset[str]:
    """``word`` and its regular inflections: plurals, -ed/-d, -ing ("restart" -> "restarts", "restarted",
    "restarting"; "reinstall" -> "reinstalling"; "update" -> "updated", "updating")."""
    forms = {word, *plural_forms(word), word + "ing"}
    if word.endswith("e"):
        forms.update({word + "d", word[:-1] + "ing"})
    else:
        forms.add(word + "ed")
    return frozenset(forms)


def phrase_in(words: Sequence[str], phrase: Phrase) -> bool:
    """Whether ``phrase`` occurs in ``words`` as a run of whole words, its last word possibly inflected."""
    n = len(phrase)
    if n == 0:
        return False
    last = word_forms(phrase[-1])
    return any(tuple(words[i:i + n - 1]) == phrase[:-1] and words[i + n - 1] in last
               for i in range(len(words) - n + 1))


def mentions(words: Sequence[str], phrases: Sequence[Phrase]) -> bool:
    """Whether any of ``phrases`` occurs in ``words``."""
    return any(phrase_in(words, p) for p in phrases)


def phrases_of(values: Any, where: str) -> tuple[Phrase, ...]:
    """Normalized phrases of a list of strings, else a `ConfigError` naming ``where``."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{where} = {values!r}: must be a non-empty list of phrases; give e.g. "
                          f"{where}=['restart', 'reboot']")
    out = []
    for value in values:
        words = tuple(normalize(value)) if isinstance(value, str) else ()
        if not words:
            raise ConfigError(f"{where} = {values!r}: {value!r} has no words; give phrases such as 'restart'")
        out.append(words)
    return tuple(out)


def check_text(value: Any, where: str) -> str:
    """A line the user says: non-empty text of :data:`CHARSET` characters (the observation space's)."""
    bad = sorted({c for c in value if c not in CHARSET}) if isinstance(value, str) else []
    if not isinstance(value, str) or not value.strip() or bad:
        why = f"holds characters outside the text space: {''.join(bad)!r}" if bad else "must be non-empty text"
        raise ConfigError(f"{where} = {value!r}: {why}; give a sentence of letters, digits and punctuation")
    return value


@dataclass(frozen=True)
class Goal:
    """One user problem: ``required`` keyword groups (each a tuple of normalized phrases), one follow-up line
    per group, ``forbidden`` phrases (the file's global ones included) and the line said when satisfied."""

    id: str
    opening: str
    required: tuple[tuple[Phrase, ...], ...]
    followups: tuple[str, ...]
    forbidden: tuple[Phrase, ...] = ()
    thanks: str = THANKS
    steps: tuple[tuple[str, ...], ...] = ()  # each group's phrases as written: what the expert says

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str, forbidden: Sequence[Phrase] = ()) -> Goal:
        """Read and check one goal record of the JSON table; ``where`` names it in errors."""
        if not isinstance(record, Mapping):
            raise ConfigError(f"{where} = {record!r}: must be a mapping with id, opening, required and followups")
        missing = [k for k in ("id", "opening", "required", "followups") if k not in record]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}; give every goal id, opening, required "
                              f"(keyword groups) and followups (one line per group)")
        groups = record["required"]
        if isinstance(groups, str) or not isinstance(groups, Sequence) or not groups:
            raise ConfigError(f"{where}.required = {groups!r}: must be a non-empty list of keyword groups; give e.g. "
                              f"[['restart', 'reboot'], ['cable', 'plug']]")
        required = tuple(phrases_of(g, f"{where}.required[{i}]") for i, g in enumerate(groups))
        followups = record["followups"]
        if isinstance(followups, str) or not isinstance(followups, Sequence) or len(followups) != len(required):
            raise ConfigError(f"{where}.followups = {followups!r}: must be a list of {len(required)} lines, one per "
                              f"required group; give what the user says while that group is missing")
        own = phrases_of(record["forbidden"], f"{where}.forbidden") if record.get("forbidden") else ()
        return cls(id=check_text(str(record["id"]), f"{where}.id"),
                   opening=check_text(record["opening"], f"{where}.opening"), required=required,
                   followups=tuple(check_text(f, f"{where}.followups[{i}]") for i, f in enumerate(followups)),
                   forbidden=(*own, *forbidden),
                   thanks=check_text(record.get("thanks", THANKS), f"{where}.thanks"),
                   steps=tuple(tuple(str(p) for p in g) for g in groups))

    def covers(self, words: Sequence[str]) -> set[int]:
        """The indices of the required groups that ``words`` covers."""
        return {i for i, group in enumerate(self.required) if mentions(words, group)}

    def forbids(self, words: Sequence[str]) -> bool:
        """Whether ``words`` holds a forbidden phrase."""
        return mentions(words, self.forbidden)


def read_goals(data: Mapping[str, Any], source: str = DATA_FILE) -> tuple[Goal, ...]:
    """The goals of a table shaped like ``helpdesk_goals.json`` (``goals``, optional global ``forbidden``);
    a `ConfigError` for a malformed goal or a repeated id."""
    records = data.get("goals") if isinstance(data, Mapping) else None
    if isinstance(records, str) or not isinstance(records, Sequence) or not records:
        raise ConfigError(f"{source}: 'goals' must be a non-empty list of goal records; give "
                          f"{{'goals': [{{'id': ..., 'opening': ..., 'required': ..., 'followups': ...}}]}}")
    common = phrases_of(data["forbidden"], f"{source}.forbidden") if data.get("forbidden") else ()
    goals = tuple(Goal.from_record(r, f"{source}.goals[{i}]", common) for i, r in enumerate(records))
    ids = [g.id for g in goals]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigError(f"{source}: goal ids {', '.join(repeated)} are used more than once; give each goal its "
                          f"own id")
    return goals


@cache
def shipped_goals() -> tuple[Goal, ...]:
    """The shipped goals (``langrl/data/helpdesk_goals.json``)."""
    return read_goals(cached_data(DATA_FILE))


def held_out(index: int) -> bool:
    """Whether goal ``index`` (its position in the table) belongs to the test split: every 5th goal."""
    return index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


def split_goals(goals: Sequence[Goal], split: str) -> list[Goal]:
    """The goals of ``split`` (``train``, ``test`` or ``all``), in table order."""
    if split not in SPLITS:
        raise ConfigError(f"split = {split!r}: must be one of {', '.join(SPLITS)}; give e.g. split='test' to "
                          f"evaluate on the held-out user goals")
    if split == "all":
        return list(goals)
    return [g for i, g in enumerate(goals) if held_out(i) == (split == "test")]


class HelpDesk(SimulatedUserEnv):
    """A help-desk user with a scripted goal who gives rule-based feedback (see the module docstring).

    ``goals``: ``None`` (the shipped table) or a table shaped like ``helpdesk_goals.json`` (a mapping with
    ``goals``); ``split`` picks train, test or all of them.
    """

    def __init__(self, split: str = "train", patience: int = 2, max_turns: int = 10, success_reward: float = 1.0,
                 progress_reward: float = 0.5, annoyance_cost: float = 0.1, leave_penalty: float = 1.0,
                 max_words: int = 80, goals: Mapping[str, Any] | None = None):
        super().__init__(max_turns=max_turns, success_reward=success_reward, question_cost=0.0)
        self.patience = check_int("patience", patience, 1, 2)
        self.progress_reward = check_float("progress_reward", progress_reward, 0.5, non_negative=True)
        self.annoyance_cost = check_float("annoyance_cost", annoyance_cost, 0.1, non_negative=True)
        self.leave_penalty = check_float("leave_penalty", leave_penalty, 1.0, non_negative=True)
        self.max_words = check_int("max_words", max_words, 1, 80)
        table = shipped_goals() if goals is None else read_goals(goals, "goals")
        self.split = split
        self.goals = split_goals(table, split)
        if not self.goals:
            raise ConfigError(f"split = {split!r}: no goals fall in it (the table has {len(table)}); give "
                              f"split='all' or a table of at least {HELD_OUT_EVERY} goals")
        self.names = [g.id for g in self.goals]
        self.covered: set[int] = set()
        self.useless = 0
        self.feedback: str | None = None

    @property
    def target_names(self) -> list[str]:
        return self.names

    @property
    def goal(self) -> Goal:
        """The current episode's goal."""
        assert self.target is not None, "reset first"
        return self.goals[self.target]

    def begin(self) -> None:
        self.covered, self.useless, self.feedback = set(), 0, None

    def opening(self) -> str:
        return self.goal.opening

    def problem(self) -> str:
        """What is still wrong: the opening before anything helped, else the first missing group's follow-up."""
        goal = self.goal
        if not self.covered:
            return goal.opening
        return goal.followups[min(i for i in range(len(goal.required)) if i not in self.covered)]

    def info(self, gain: float | None = None, kind: str | None = None) -> dict[str, Any]:
        info = super().info(gain, kind)
        info["covered"] = len(self.covered)
        info["remaining"] = len(self.goal.required) - len(self.covered)
        if self.feedback is not None:
            info["feedback"] = self.feedback
        return info

    def expert_policy(self) -> HelpDeskExpert:
        """The scripted expert that knows every goal's fix (`langrl eval ... --model expert` plays it)."""
        return HelpDeskExpert(self, int(self.np_random.integers(2**31)))

    def respond(self, utterance: str, target: int) -> Reply:
        """The user's feedback on one reply (the rules of the module docstring); updates the covered groups."""
        goal = self.goals[target]
        words = normalize(utterance)
        if goal.forbids(words):
            return self.leave(REFUSES)
        too_long = len(words) > self.max_words
        new = set() if too_long else goal.covers(words) - self.covered
        if new:
            self.covered |= new
            self.useless = 0
            if len(self.covered) == len(goal.required):
                self.feedback = "satisfied"
                return Reply(goal.thanks, solved=True, kind="reply", reward=self.success_reward)
            self.feedback = "helped"
            return Reply(HELPED + self.problem(), kind="reply",
                         reward=self.progress_reward * len(new) / len(goal.required))
        self.useless += 1
        if self.useless >= self.patience:
            return self.leave(GIVES_UP)
        self.feedback = "repeats"
        opener = TOO_LONG if too_long else ANNOYED[min(self.useless, len(ANNOYED)) - 1]
        return Reply(opener + self.problem(), kind="reply", reward=-self.annoyance_cost)

    def leave(self, text: str) -> Reply:
        """The user leaves: the episode ends in failure."""
        self.feedback = "leaves"
        return Reply(text, ends=True, kind="reply", reward=-self.leave_penalty)


class HelpDeskExpert:
    """The scripted expert: reads the goal the user has (the table is its knowledge) and, each turn, names the
    first step still missing, one step per reply as the system prompt asks ("Here is what to do: restart."),
    in one of the group's phrasings drawn from its own seeded stream. It satisfies every user in as many turns
    as the goal has groups: the reference a learner is measured against, and the source of supervised replies
    (`langrl.agents.reply_feedback --expert`)."""

    def __init__(self, env: HelpDesk, seed: int):
        self.env = env
        self.rng = np.random.default_rng(seed)

    def __call__(self, message: str) -> str:
        goal, covered = self.env.goal, self.env.covered
        missing = min(i for i in range(len(goal.required)) if i not in covered)
        phrases = goal.steps[missing]
        return f"Here is what to do: {phrases[int(self.rng.integers(len(phrases)))]}."
