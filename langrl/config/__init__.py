"""Configs: one pydantic model per kind of run, chosen by the ``kind`` discriminator; shared sections once.

- ``kind: lm`` (:class:`Config`): RL fine-tuning of an LM on prompts with a reward (`langrl.lm`).
- ``kind: agent`` (:class:`AgentConfig`): an LM acting in a Gymnasium text environment (`langrl.agents`).

A config without ``kind`` is an agent run when it has an ``env`` section and an LM run otherwise, so
configs written before ``kind`` existed keep working; `config_kind` is the one place that decides.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from langrl.config.agent import AgentConfig, agent_config_from_data, load_agent_config
from langrl.config.base import (
    LogConfig,
    LoraConfig,
    OptimConfig,
    RunConfig,
    Section,
    config_to_yaml,
    format_errors,
    read_config_data,
    set_override,
    show,
)
from langrl.config.lm import (
    ActorCriticConfig,
    BayesConfig,
    Config,
    DPGConfig,
    KLConfig,
    PromptsConfig,
    SamplingSection,
    TrainConfig,
    lm_config_from_data,
    load_config,
)
from langrl.errors import ConfigError

AnyConfig = Config | AgentConfig
ConfigSource = AnyConfig | dict[str, Any] | str | Path

KINDS: dict[str, Callable[[dict[str, Any], Path | None], Any]] = {
    "lm": lm_config_from_data,
    "agent": agent_config_from_data,
}


def config_kind(data: dict[str, Any]) -> str:
    """The kind of run a raw config mapping describes: its ``kind``, else inferred (see the module doc)."""
    kind = data.get("kind", "agent" if "env" in data else "lm")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"kind = {show(kind)}: unknown kind of run; allowed: {', '.join(KINDS)}")
    return str(kind)


def load_any_config(source: ConfigSource, overrides: list[str] | tuple[str, ...] = ()) -> AnyConfig:
    """Read any kind of config (YAML path, dict, or a built config), apply overrides, validate."""
    if isinstance(source, (Config, AgentConfig)):
        if overrides:
            raise ConfigError("overrides need a YAML path or a dict, not an already built config")
        return source
    data, base = read_config_data(source, overrides)
    config: AnyConfig = KINDS[config_kind(data)](data, base)
    return config


__all__ = [
    "ActorCriticConfig", "AgentConfig", "AnyConfig", "BayesConfig", "Config", "ConfigSource", "DPGConfig",
    "KLConfig", "LogConfig", "LoraConfig", "OptimConfig", "PromptsConfig", "RunConfig", "SamplingSection",
    "Section", "TrainConfig", "config_kind", "config_to_yaml", "load_agent_config", "load_any_config",
    "load_config", "read_config_data", "format_errors", "set_override",
]
