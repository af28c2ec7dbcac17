"""Text environments on Gymnasium, registered under the ``langrl/`` namespace.

- ``langrl/CartPole-Text-v0``: CartPole-v1 described in one sentence (:class:`CartPoleText`).
- ``langrl/BabyAI-<level>-Text-v0`` for each level in :data:`BABYAI_LEVELS`, and
  ``langrl/BabyAI-Text-v0`` taking ``env_id=`` for any other minigrid level (:class:`BabyAIText`).
- :class:`TokenizeObservation` turns a text observation into token ids for Stable-Baselines3.

Importing this package registers the ids, so it is the module to give the RL Zoo's ``--gym-packages``
(``--gym-packages langrl.envs.text``). Registration uses entry-point strings, so importing it imports
neither minigrid nor the environment modules: ``gymnasium.make`` imports them when an environment is first
made, and only the BabyAI ids need minigrid (``pip install minigrid``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium

from langrl.envs.dialogue import register_dialogue_envs

BABYAI_LEVELS = (
    "GoToRedBallGrey", "GoToRedBall", "GoToRedBallNoDists", "GoToObj", "GoToLocal", "GoTo", "PickupLoc",
    "Pickup", "PutNextLocal", "OpenDoor", "UnlockLocal",
)
CARTPOLE_ID = "langrl/CartPole-Text-v0"


def babyai_id(level: str) -> str:
    """``GoToLocal`` -> ``langrl/BabyAI-GoToLocal-Text-v0``."""
    return f"langrl/BabyAI-{level}-Text-v0"


def register_envs() -> list[str]:
    """Register the text environments with gymnasium (idempotent); returns their ids."""
    specs: dict[str, dict[str, Any]] = {
        CARTPOLE_ID: {"entry_point": "langrl.envs.text.cartpole:CartPoleText"},
        "langrl/BabyAI-Text-v0": {"entry_point": "langrl.envs.text.babyai:BabyAIText"},
    }
    for level in BABYAI_LEVELS:
        specs[babyai_id(level)] = {
            "entry_point": "langrl.envs.text.babyai:BabyAIText", "kwargs": {"env_id": f"BabyAI-{level}-v0"},
        }
    for env_id, spec in specs.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, **spec)
    return list(specs)


ENV_IDS = register_envs()  # choice environments (info["actions"]); the dialogue ones take free text
DIALOGUE_IDS = register_dialogue_envs()

if TYPE_CHECKING:
    from langrl.envs.text.babyai import BABYAI_ACTIONS, BabyAIText
    from langrl.envs.text.cartpole import CARTPOLE_ACTIONS, CartPoleText, describe_cartpole
    from langrl.envs.text.describe import describe_view
    from langrl.envs.text.tokenize import DecodeIds, TokenizeObservation, decode_ids, encode_texts, load_tokenizer

LAZY = {
    "BABYAI_ACTIONS": "babyai", "BabyAIText": "babyai", "CARTPOLE_ACTIONS": "cartpole",
    "CartPoleText": "cartpole", "describe_cartpole": "cartpole", "describe_view": "describe",
    "TokenizeObservation": "tokenize", "decode_ids": "tokenize", "encode_texts": "tokenize", "DecodeIds": "tokenize",
    "load_tokenizer": "tokenize",
}

__all__ = [
    "BABYAI_ACTIONS", "BABYAI_LEVELS", "CARTPOLE_ACTIONS", "CARTPOLE_ID", "ENV_IDS", "BabyAIText",
    "CartPoleText", "DecodeIds", "TokenizeObservation", "babyai_id", "decode_ids", "describe_cartpole",
    "describe_view", "encode_texts", "load_tokenizer", "register_envs",
]


def __getattr__(name: str) -> Any:
    """Import an environment module on first use (the BabyAI ones need minigrid)."""
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(f"langrl.envs.text.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
