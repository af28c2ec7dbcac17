"""``langrl.evaluate``: measure a model on any kind of config's task, as a JSON-able dict."""

from __future__ import annotations

from typing import Any

from langrl.config import AgentConfig, ConfigSource, load_any_config
from langrl.errors import ConfigError


def evaluate(config: ConfigSource, model: str, overrides: list[str] | tuple[str, ...] = (),
             num_prompts: int = 16, episodes: int | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on the task of ``config``.

    - ``kind: lm``: mean reward and KL to the config's model over the first ``num_prompts`` prompts
      (`langrl.lm.evaluate.evaluate_lm`);
    - ``kind: agent``: success rate and mean return over ``episodes`` held-out seeds (default the
      config's ``eval.episodes``); ``model`` may be a run folder (`langrl.agents.lm_agent.evaluate_agent`).
    """
    if num_prompts < 1:
        raise ConfigError(f"num_prompts (--num-prompts) = {num_prompts}: evaluate at least 1 prompt")
    if episodes is not None and episodes < 1:
        raise ConfigError(f"episodes (--episodes) = {episodes}: evaluate at least 1 episode")
    cfg = load_any_config(config, overrides)
    if isinstance(cfg, AgentConfig):
        from langrl.agents.lm_agent import evaluate_agent

        if episodes is None and cfg.eval.episodes < 1:
            raise ConfigError(f"eval.episodes = {cfg.eval.episodes}: evaluating needs at least 1 episode; "
                              f"set eval.episodes in the config or pass --episodes N")
        return evaluate_agent(cfg, model, episodes)
    from langrl.lm.evaluate import evaluate_lm

    return evaluate_lm(cfg, model, num_prompts)


__all__ = ["evaluate"]
