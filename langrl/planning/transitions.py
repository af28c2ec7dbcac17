"""The data of an LM world model: transitions of a text environment, how they are collected, stored, and
written as text for an LM to read and predict.

A :class:`Transition` is one real step ``(observation, action, next_observation, reward, done)`` with the
action as its string and ``done`` the environment's *termination* (a time limit's truncation is not part of
the dynamics: nothing in the observation predicts it). :func:`collect_transitions` plays seeded episodes
(the reset seed of episode i is ``seed_start + i``; its actions come from a generator seeded with that seed),
so the same arguments give the same transitions, and held-out data is simply other seeds.

The text format, in one place: the LM reads :func:`prompt_text` and is trained to write :func:`target_text`
(then EOS); :func:`parse_target` reads a generation back and never raises::

    <observation>
    Action: go forward
    Next:
    <next observation>
    Reward: 0.97
    Done: yes
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from langrl.envs.text.core import make_env, quiet_reset
from langrl.errors import ConfigError
from langrl.run.io import atomic_write_jsonl, read_dataset_rows

Policy = Literal["random", "bot"]
FIELDS = {"observation": str, "action": str, "next_observation": str}
ROW_HELP = ('each line must be a JSON object {"observation": str, "action": str, "next_observation": str, '
            '"reward": number, "done": bool}')
END = re.compile(r"^(?:Reward|Done):", re.MULTILINE)  # where a generated next observation ends
REWARD = re.compile(r"^Reward:[ \t]*(-?\d+(?:\.\d*)?)", re.MULTILINE)
DONE = re.compile(r"^Done:[ \t]*(yes|no)\b", re.MULTILINE)


@dataclass(frozen=True)
class Transition:
    """One real step of a text environment (``done``: terminated, see the module doc)."""

    observation: str
    action: str
    next_observation: str
    reward: float
    done: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Any, where: str = "transition") -> Transition:
        """A transition from a JSON object, checked: a one-line `ConfigError` names ``where`` and the field."""
        if not isinstance(row, dict):
            raise ConfigError(f"{where} is {type(row).__name__}, not an object; {ROW_HELP}")
        for name, kind in FIELDS.items():
            if not isinstance(row.get(name), kind):
                raise ConfigError(f"{where}: {name} = {str(row.get(name))[:60]!r} is not a string; {ROW_HELP}")
        reward, done = row.get("reward"), row.get("done")
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise ConfigError(f"{where}: reward = {reward!r} is not a finite number; {ROW_HELP}")
        if not isinstance(done, bool):
            raise ConfigError(f"{where}: done = {done!r} is not true or false; {ROW_HELP}")
        return cls(row["observation"], row["action"], row["next_observation"], float(reward), done)


# ---------------------------------------------------------------------------------------------- text

def prompt_text(observation: str, action: str) -> str:
    """What the LM reads: the observation, the action, and the cue for the next observation."""
    return f"{observation}\nAction: {action}\nNext:\n"


def target_text(next_observation: str, reward: float, done: bool) -> str:
    """What the LM is trained to write after :func:`prompt_text` (EOS follows it)."""
    return f"{next_observation}\nReward: {reward:.2f}\nDone: {'yes' if done else 'no'}"


def parse_target(text: str) -> tuple[str, float, bool]:
    """(next observation, reward, done) of a generated :func:`target_text`; never raises.

    The observation is the text before the first line starting ``Reward:`` or ``Done:`` (all of it when
    there is none, e.g. a generation cut at its token limit); a missing or unreadable reward is 0.0, a
    missing ``Done:`` line is False.
    """
    end = END.search(text)
    observation = text if end is None else text[:end.start()]
    if end is not None and observation.endswith("\n"):
        observation = observation[:-1]
    reward_match, done_match = REWARD.search(text), DONE.search(text)
    reward = float(reward_match.group(1)) if reward_match else 0.0
    return observation, reward if math.isfinite(reward) else 0.0, bool(done_match and done_match.group(1) == "yes")


def transition_texts(transitions: Sequence[Transition]) -> list[str]:
    """Every prompt and target text of ``transitions`` (what a tokenizer fitted to the data must cover)."""
    return [text for t in transitions for text in (prompt_text(t.observation, t.action),
                                                   target_text(t.next_observation, t.reward, t.done))]


# ---------------------------------------------------------------------------------------------- files

def write_transitions(path: str | Path, transitions: Sequence[Transition]) -> None:
    """``transitions`` as JSON Lines, atomically."""
    atomic_write_jsonl(path, (t.to_dict() for t in transitions))


def read_transitions(path: str | Path, field: str = "data.file") -> list[Transition]:
    """The transitions of a JSON Lines file, checked; errors name ``field``, the file and the line."""
    rows = read_dataset_rows(path, field, "a JSONL file of transitions (e.g. the transitions.jsonl of a "
                             "world_model run) or leave it null to collect them", ROW_HELP)
    return [Transition.from_dict(row, f"{field} = {str(path)!r}: line {i + 1}") for i, row in enumerate(rows)]


# ---------------------------------------------------------------------------------------------- collection

class BotActor:
    """minigrid's `BabyAIBot` expert on a langrl BabyAI text environment, replaced by a uniformly random
    action with probability ``epsilon`` (so the data shows mistakes and their consequences).

    The bot is told every action actually taken (its advising mode). When a random action leaves it unable to
    plan (it asserts, or asks for minigrid's ``done``, which the text environment leaves out), it is rebuilt
    from the current state; if that fails too, the step is random.
    """

    def __init__(self, env: gym.Env, n_actions: int, epsilon: float):
        from minigrid.utils.baby_ai_bot import BabyAIBot  # minigrid is optional

        self.make = lambda: BabyAIBot(env.unwrapped.inner.unwrapped)  # type: ignore[attr-defined]
        self.bot = self.make()
        self.n_actions, self.epsilon = n_actions, epsilon
        self.taken: int | None = None  # the last action, when it was not the bot's suggestion

    def suggest(self) -> int | None:
        for fresh in (False, True):
            try:
                if fresh:
                    self.bot, self.taken = self.make(), None
                action = int(self.bot.replan(self.taken))
            except Exception:  # noqa: BLE001 - the bot asserts on states its plan did not foresee
                continue
            if action < self.n_actions:
                return action
        return None

    def act(self, rng: np.random.Generator) -> int:
        # both draws happen at every step, so one episode's random stream does not depend on the bot
        explore, random_action = rng.random() < self.epsilon, int(rng.integers(self.n_actions))
        suggested = self.suggest()
        action = random_action if explore or suggested is None else suggested
        self.taken = None if action == suggested else action
        return action


def check_bot(env: gym.Env, env_id: str) -> None:
    """``policy: bot`` needs minigrid's bot and a langrl BabyAI text environment."""
    try:
        import minigrid.utils.baby_ai_bot  # noqa: F401
    except ImportError:
        raise ConfigError("data.policy = 'bot' needs minigrid's BabyAIBot: pip install minigrid, or use "
                          "data.policy: random") from None
    inner = getattr(env.unwrapped, "inner", None)
    if inner is None or not hasattr(inner.unwrapped, "gen_mission"):  # a BabyAI level (RoomGridLevel)
        raise ConfigError(f"data.policy = 'bot': data.env_id = {env_id!r} is not a langrl BabyAI text "
                          f"environment (the bot plans on its minigrid level); use data.policy: random")


def collect_transitions(env_id: str, env_kwargs: dict[str, Any] | None, episodes: int, seed_start: int,
                        policy: Policy, max_steps: int | None = None, epsilon: float = 0.3) -> list[Transition]:
    """The transitions of ``episodes`` episodes, the i-th reset with seed ``seed_start + i`` and acted in by
    ``policy`` (``random``: uniform over the actions; ``bot``: :class:`BotActor` with ``epsilon``) from a
    generator seeded with the episode's seed. ``max_steps`` caps an episode (None: the environment's own)."""
    if policy not in ("random", "bot"):
        raise ConfigError(f"data.policy = {policy!r}: unknown policy; allowed: random, bot")
    env = make_env(env_id, env_kwargs, max_steps)
    if policy == "bot":
        check_bot(env, env_id)
    out: list[Transition] = []
    for seed in range(seed_start, seed_start + episodes):
        out += play_episode(env, env_id, seed, policy, epsilon)
    env.close()
    return out


def play_episode(env: gym.Env, env_id: str, seed: int, policy: Policy, epsilon: float) -> list[Transition]:
    """The transitions of one episode from ``seed`` (see :func:`collect_transitions`)."""
    obs, info = quiet_reset(env, seed)
    if "actions" not in info:
        raise ConfigError(f"data.env_id = {env_id!r}: reset's info has no 'actions' (the action strings the "
                          f"world model reads); use a langrl text environment such as "
                          f"langrl/BabyAI-GoToLocal-Text-v0")
    names = list(info["actions"])
    rng = np.random.default_rng(seed)
    bot = BotActor(env, len(names), epsilon) if policy == "bot" else None
    out = []
    while True:
        a = bot.act(rng) if bot is not None else int(rng.integers(len(names)))
        nxt, reward, terminated, truncated, _ = env.step(a)
        out.append(Transition(str(obs), names[a], str(nxt), float(reward), bool(terminated)))
        if terminated or truncated:
            return out
        obs = nxt


__all__ = ["BotActor", "Transition", "collect_transitions", "parse_target", "prompt_text", "read_transitions",
           "target_text", "transition_texts", "write_transitions"]
