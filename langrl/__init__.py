"""langrl: reinforcement learning with language models, in both directions.

Quick start::

    import langrl
    result = langrl.train("configs/positive_sentiment.yaml", overrides=["steps=3"])
    print(result.run_dir, result.metrics["reward/mean"])
"""

import langrl.envs.text  # noqa: F401  (registers the langrl/... text environments with gymnasium)
from langrl.api import train
from langrl.config import AgentConfig, Config, load_any_config, load_config
from langrl.errors import ConfigError, LangrlError, RewardError
from langrl.eval import evaluate
from langrl.models import LM, load_lm, tiny_lm
from langrl.rewards import RewardFn, build_reward, score
from langrl.run.callbacks import Callback, EarlyStopping, StopAtThreshold
from langrl.run.harness import TrainResult

__version__ = "0.1.0"

__all__ = [
    "LM", "AgentConfig", "Callback", "Config", "ConfigError", "EarlyStopping", "StopAtThreshold",
    "LangrlError", "RewardError", "RewardFn", "TrainResult",
    "build_reward", "evaluate", "load_any_config", "load_config", "load_lm", "score", "tiny_lm", "train",
]
