"""langrl: reinforcement learning with language models, in both directions.

Quick start::

    import langrl
    result = langrl.train("configs/positive_sentiment.yaml", overrides=["steps=3"])
    print(result.run_dir, result.metrics["reward/mean"])
"""

from langrl.config import Config, load_config
from langrl.errors import ConfigError, LangrlError, RewardError
from langrl.evaluate import evaluate
from langrl.models import LM, load_lm, tiny_lm
from langrl.rewards import RewardFn, build_reward, score
from langrl.trainer import TrainResult, train

__version__ = "0.1.0"

try:  # registers the langrl/... text environments with gymnasium when it is installed (extra: agents)
    import langrl.envs.text  # noqa: F401
except ImportError:  # pragma: no cover - the core library works without gymnasium
    pass

__all__ = [
    "LM", "Config", "ConfigError", "LangrlError", "RewardError", "RewardFn", "TrainResult", "build_reward",
    "evaluate", "load_config", "load_lm", "score", "tiny_lm", "train",
]
