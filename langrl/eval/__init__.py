"""``langrl.evaluate``: measure a model on any kind of config's task, as a JSON-able dict."""

from __future__ import annotations

from typing import Any

from langrl.config import ConfigSource, kind_of, load_any_config
from langrl.errors import ConfigError


def evaluate(config: ConfigSource, model: str, overrides: list[str] | tuple[str, ...] = (),
             num_prompts: int = 16, episodes: int | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on the task of ``config`` (each kind's evaluation is named in `langrl.config.KINDS`).

    - ``kind: lm`` / ``offline``: mean reward and KL to the config's model over the first ``num_prompts``
      prompts;
    - ``kind: agent`` / ``tabular`` / ``dqn``: mean return (and success rate where the environment has
      one) over ``episodes`` held-out seeds (default the config's ``eval.episodes``); ``model`` is a run
      folder or checkpoint (for ``agent`` also a model name: the zero-shot prior);
    - ``kind: dialogue``: success rate, mean return and turns over ``episodes`` held-out episodes; ``model``
      may also be ``expert``, the environment's expert policy (Twenty Questions: the greedy questioner).
    """
    if num_prompts < 1:
        raise ConfigError(f"num_prompts (--num-prompts) = {num_prompts}: evaluate at least 1 prompt")
    if episodes is not None and episodes < 1:
        raise ConfigError(f"episodes (--episodes) = {episodes}: evaluate at least 1 episode")
    cfg = load_any_config(config, overrides)
    result: dict[str, Any] = kind_of(cfg).function("evaluate")(cfg, model, num_prompts=num_prompts,
                                                                 episodes=episodes)
    return result


__all__ = ["evaluate"]
