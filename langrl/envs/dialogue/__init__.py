"""Multi-turn dialogue environments with rule-based simulated users (LMRL-Gym style, Abdulhai et al. 2023).

The agent is the questioner; a simulated user holds a hidden target and answers in text
(:class:`SimulatedUserEnv`: reset, step, info and reward are described in :mod:`langrl.envs.dialogue.base`).

- ``langrl/TwentyQuestions-v0``: find a hidden everyday object with yes/no questions (:class:`TwentyQuestions`;
  :func:`optimal_questioner` is the greedy information-gain questioner).
- ``langrl/GuessMyCity-v0``: find a hidden world city with free-text questions (:class:`GuessMyCity`).
- ``langrl/HelpDesk-v0``: the agent is a help-desk assistant; a user with a scripted goal (a problem from
  ``langrl/data/helpdesk_goals.json``) gives rule-based feedback on each reply (:class:`HelpDesk`; ``split=``
  ``train``, ``test`` or ``all`` for held-out user goals).
- ``langrl/LMUser-v0``: a user played by a causal LM prompted with a persona (:class:`LMUser`; ``persona=``,
  ``model=``: ``tiny`` by default, the embedded ``smollm2-135m-instruct`` for a real one).
- ``langrl/ToyDialogue-v0``: a letter-echo game small enough to enumerate, so the optimum of multi-turn RL is
  known exactly (:class:`ToyDialogue`; ``configs/toy_dialogue.yaml``).

:func:`register_dialogue_envs` registers these ids with gymnasium (idempotent; importing this package calls it).
Registration uses entry-point strings, so it imports no environment module (nor torch or a model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium

TWENTY_QUESTIONS_ID = "langrl/TwentyQuestions-v0"
GUESS_MY_CITY_ID = "langrl/GuessMyCity-v0"
HELPDESK_ID = "langrl/HelpDesk-v0"
LM_USER_ID = "langrl/LMUser-v0"
TOY_DIALOGUE_ID = "langrl/ToyDialogue-v0"
DIALOGUE_SPECS: dict[str, str] = {
    TWENTY_QUESTIONS_ID: "langrl.envs.dialogue.twenty_questions:TwentyQuestions",
    GUESS_MY_CITY_ID: "langrl.envs.dialogue.guess_my_city:GuessMyCity",
    HELPDESK_ID: "langrl.envs.dialogue.helpdesk:HelpDesk",
    LM_USER_ID: "langrl.envs.dialogue.lm_user:LMUser",
    TOY_DIALOGUE_ID: "langrl.envs.dialogue.toy:ToyDialogue",
}


def register_dialogue_envs() -> list[str]:
    """Register the dialogue environments with gymnasium (idempotent); returns their ids."""
    for env_id, entry_point in DIALOGUE_SPECS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)
    return list(DIALOGUE_SPECS)


DIALOGUE_ENV_IDS = register_dialogue_envs()

if TYPE_CHECKING:
    from langrl.envs.dialogue.base import Reply, SimulatedUserEnv
    from langrl.envs.dialogue.guess_my_city import GuessMyCity, parse_city_question
    from langrl.envs.dialogue.helpdesk import HelpDesk
    from langrl.envs.dialogue.lm_user import LMUser
    from langrl.envs.dialogue.toy import ToyDialogue
    from langrl.envs.dialogue.twenty_questions import (
        GreedyQuestioner,
        TwentyQuestions,
        greedy_mean_questions,
        optimal_questioner,
        parse_question,
    )

LAZY = {
    "Reply": "base", "SimulatedUserEnv": "base", "GuessMyCity": "guess_my_city",
    "parse_city_question": "guess_my_city", "GreedyQuestioner": "twenty_questions",
    "TwentyQuestions": "twenty_questions", "greedy_mean_questions": "twenty_questions",
    "optimal_questioner": "twenty_questions", "parse_question": "twenty_questions", "HelpDesk": "helpdesk",
    "LMUser": "lm_user", "ToyDialogue": "toy",
}

__all__ = [
    "DIALOGUE_ENV_IDS", "GUESS_MY_CITY_ID", "HELPDESK_ID", "LM_USER_ID", "TOY_DIALOGUE_ID", "TWENTY_QUESTIONS_ID",
    "GreedyQuestioner", "GuessMyCity", "HelpDesk", "LMUser", "Reply", "SimulatedUserEnv", "ToyDialogue",
    "TwentyQuestions", "greedy_mean_questions", "optimal_questioner", "parse_city_question", "parse_question",
    "register_dialogue_envs",
]


def __getattr__(name: str) -> Any:
    """Import an environment module on first use (keeps ``import langrl.envs.dialogue`` light)."""
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(f"langrl.envs.dialogue.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
