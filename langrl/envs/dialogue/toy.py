"""The toy multi-turn task: a letter game small enough to enumerate, so the optimum of multi-turn RL is known.

The user says a letter; each turn the policy answers and earns 1 if its answer starts with the user's last
letter (case ignored); the user then says the letter that follows the policy's first letter in the alphabet
(cyclically within the first ``vocab_size`` letters; ``a`` when the answer has no such letter). The episode ends
after ``turns`` turns. The best answer to turn 2 thus depends on turn 1's, through the user's reply: credit has
to cross turns.

With the toy LM (``model: toy``: one token per letter, no EOS) and ``sampling.max_new_tokens: 1`` an episode is
``turns`` policy tokens, so there are ``vocab_size ** turns`` episodes per opening. The user's tokens follow
from the policy's, so the optimum of E[R] - beta KL(pi || pi0) over the policy's tokens is
pi*(episode) = pi0(episode) exp(R / beta) / Z with pi0(episode) the product of the policy's token probabilities
alone (``tests/learning/test_dialogue_toy.py`` enumerates it). ``configs/toy_dialogue.yaml`` trains on it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from langrl.envs.dialogue.base import check_int
from langrl.envs.text.spaces import text_space
from langrl.errors import ConfigError

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class ToyDialogue(gym.Env):
    """Echo the user's letter: ``turns`` one-letter turns, reward 1 per echoed letter.

    ``openings``: the letters the user may open with (one per reset, drawn with the reset's seed);
    ``vocab_size``: the letters in play (``a`` .. the ``vocab_size``-th); ``turns``: the turn limit.
    ``info``: ``turn``, ``success`` (every turn echoed), ``echoed`` (turns echoed so far).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, openings: str = "b", vocab_size: int = 8, turns: int = 2):
        self.vocab_size = check_int("vocab_size", vocab_size, 2, 8)
        if self.vocab_size > len(LETTERS):
            raise ConfigError(f"vocab_size = {vocab_size!r}: at most {len(LETTERS)} letters; give e.g. vocab_size=8")
        self.letters = LETTERS[:self.vocab_size]
        if not isinstance(openings, str) or not openings or any(c not in self.letters for c in openings):
            raise ConfigError(f"openings = {openings!r}: must be letters among {self.letters!r}; give e.g. "
                              f"openings=b")
        self.openings = openings
        self.turns = check_int("turns", turns, 1, 2)
        self.observation_space = text_space()
        self.action_space = text_space()
        self.last = self.openings[0]
        self.turn = self.echoed = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.last = self.openings[int(self.np_random.integers(len(self.openings)))]
        self.turn = self.echoed = 0
        return self.last, self.info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        letter = first_letter(action, self.letters)
        reward = float(letter == self.last)
        self.echoed += int(reward)
        self.turn += 1
        self.last = self.letters[(self.letters.index(letter) + 1) % self.vocab_size] if letter else self.letters[0]
        return self.last, reward, False, self.turn >= self.turns, self.info()

    def info(self) -> dict[str, Any]:
        return {"turn": self.turn, "echoed": self.echoed,
                "success": self.turn == self.turns and self.echoed == self.turns}


def first_letter(text: str, letters: str) -> str | None:
    """The first character of ``text`` (stripped, lower case) if it is one of ``letters``, else None."""
    head = str(text).strip()[:1].lower()
    return head if head and head in letters else None

