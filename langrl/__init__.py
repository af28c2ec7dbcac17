"""langrl: reinforcement learning with language models, in both directions.

Quick start::

    import langrl
    result = langrl.train("configs/positive_sentiment.yaml", overrides=["steps=3"])
    print(result.run_dir, result.metrics["reward/mean"])

``import langrl`` registers the ``langrl/...`` text environments with gymnasium and nothing heavier: the
names below (and torch, transformers) are imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

import langrl.envs.text  # noqa: F401  (registers the langrl/... text environments with gymnasium)

if TYPE_CHECKING:
    from langrl.api import train
    from langrl.config import AgentConfig, Config, load_any_config, load_config
    from langrl.errors import ConfigError, LangrlError, RewardError
    from langrl.eval import evaluate
    from langrl.models import LM, load_lm, tiny_lm
    from langrl.rewards import RewardFn, build_reward, score
    from langrl.run.callbacks import Callback, EarlyStopping, StopAtThreshold
    from langrl.run.harness import TrainResult

__version__ = "0.1.0"

# Each public name and the module that defines it.
LAZY = {
    "train": "langrl.api", "AgentConfig": "langrl.config", "Config": "langrl.config",
    "load_any_config": "langrl.config", "load_config": "langrl.config", "ConfigError": "langrl.errors",
    "LangrlError": "langrl.errors", "RewardError": "langrl.errors", "evaluate": "langrl.eval", "LM": "langrl.models",
    "load_lm": "langrl.models", "tiny_lm": "langrl.models", "RewardFn": "langrl.rewards",
    "build_reward": "langrl.rewards", "score": "langrl.rewards", "Callback": "langrl.run.callbacks",
    "EarlyStopping": "langrl.run.callbacks", "StopAtThreshold": "langrl.run.callbacks",
    "TrainResult": "langrl.run.harness",
}

__all__ = [
    "LM", "AgentConfig", "Callback", "Config", "ConfigError", "EarlyStopping", "LangrlError", "RewardError",
    "RewardFn", "StopAtThreshold", "TrainResult", "build_reward", "evaluate", "load_any_config", "load_config",
    "load_lm", "score", "tiny_lm", "train",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module, or a subpackage (``langrl.models``), on first use."""
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name]), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *LAZY])
