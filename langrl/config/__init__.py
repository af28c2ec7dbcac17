"""Configs: one pydantic model per kind of run, chosen by the ``kind`` discriminator; shared sections once.

- ``kind: lm`` (:class:`Config`): RL fine-tuning of an LM on prompts with a reward (`langrl.lm`).
- ``kind: agent`` (:class:`AgentConfig`): an LM acting in a Gymnasium text environment (`langrl.agents`).
- ``kind: tabular``: tabular TD learning (Q-learning, SARSA, soft Q, ...) on a discrete environment.
- ``kind: dqn``: DQN on a Gymnasium environment, numeric or text observations.
- ``kind: offline``: learning an LM from a fixed dataset of scored texts (ILQL, filtered BC, RWR).
- ``kind: plan``: planning with a world model (MCTS, beam search, BFS) and Dyna on the toy token MDP.
- ``kind: world_model``: an LM learns a text environment's dynamics from transitions (a world model
  for ``kind: plan``).

:data:`KINDS` is the one registry: for each kind, where its config, its training loop and its evaluation
live (imported only when used). A config without ``kind`` is an agent run when it has an ``env`` section
and an LM run otherwise, so configs written before ``kind`` existed keep working; `config_kind` is the one
place that decides.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langrl.config.agent import AgentConfig, load_agent_config
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
    load_config,
)
from langrl.errors import ConfigError

AnyConfig = RunConfig  # every kind's config is a RunConfig with a ``kind`` field
ConfigSource = RunConfig | dict[str, Any] | str | Path


@dataclass(frozen=True)
class Kind:
    """Where one kind of run lives, as ``"module:function"`` names imported on use.

    - ``config(data, base) -> config``: validate a raw mapping (``base``: the YAML's folder, for paths);
    - ``train(config, output, resume, allow_config_change) -> TrainResult``;
    - ``evaluate(config, model, num_prompts, episodes) -> dict``: JSON-able measurements of ``model`` (a
      run folder, checkpoint or model name) on the config's task;
    - ``report(run_dir) -> Path``: (re)write the run's report from its folder (``langrl report``).
    """

    config: str
    train: str
    evaluate: str
    smoke: tuple[str, ...] = ()  # ``--set`` overrides that shrink any config of this kind to seconds
    report: str = "langrl.report.lm:write_report"

    def function(self, part: str) -> Callable[..., Any]:
        module, name = getattr(self, part).split(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return fn


KINDS: dict[str, Kind] = {
    "lm": Kind("langrl.config.lm:lm_config_from_data", "langrl.lm.trainer:train", "langrl.lm.evaluate:evaluate_kind",
               smoke=("steps=2", "prompts.per_step=2", "sampling.group_size=2", "sampling.max_new_tokens=4",
                      "log.checkpoint_every=2", "log.sample_every=1")),
    "agent": Kind("langrl.config.agent:agent_config_from_data", "langrl.agents.lm_agent:train_agent",
                  "langrl.agents.lm_agent:evaluate_kind",
                  smoke=("env.num_envs=2", "env.max_episode_steps=8", "ppo.n_steps=2", "ppo.env_steps=8",
                         "ppo.minibatch_size=4", "ppo.epochs=1", "imitation.episodes=2", "imitation.epochs=1",
                         "eval.episodes=2", "eval.parallel=2", "log.checkpoint_every=1"),
                  report="langrl.report.agent:write_agent_report"),
    "tabular": Kind("langrl.config.tabular:tabular_config_from_data", "langrl.agents.tabular_run:train_tabular",
                    "langrl.agents.tabular_run:evaluate_kind",
                    smoke=("steps=256", "chunk_steps=128", "num_envs=4", "eval.episodes=2", "log.checkpoint_every=1"),
                    report="langrl.report.agent:write_agent_report"),
    "dqn": Kind("langrl.config.dqn:dqn_config_from_data", "langrl.agents.dqn_run:train_dqn_run",
                "langrl.agents.dqn_run:evaluate_kind",
                smoke=("steps=600", "dqn.learning_starts=200", "dqn.train_freq=100", "dqn.gradient_steps=4",
                       "eval.every=300", "eval.episodes=2", "eval.test_episodes=2", "log.every=100",
                       "log.checkpoint_every=300"),
                report="langrl.report.agent:write_agent_report"),
    "plan": Kind("langrl.config.plan:plan_config_from_data", "langrl.planning.run:train_plan",
                 "langrl.planning.run:evaluate_kind",
                 smoke=("steps=2", "eval.episodes=1", "planner.simulations=10", "task.length=2", "dyna.episodes=4"),
                 report="langrl.planning.run:write_dyna_report"),
    "dialogue": Kind("langrl.config.dialogue:dialogue_config_from_data", "langrl.lm.dialogue:train_dialogue",
                     "langrl.lm.dialogue:evaluate_kind",
                     smoke=("steps=2", "episodes_per_step=1", "sampling.group_size=2", "sampling.max_new_tokens=4",
                            "eval.episodes=2", "log.checkpoint_every=2"),
                     report="langrl.lm.dialogue:write_dialogue_report"),
    "offline": Kind("langrl.config.offline:offline_config_from_data", "langrl.lm.offline:train_offline",
                    "langrl.lm.offline:evaluate_kind",
                    smoke=("steps=2", "train.batch_size=4", "decode.samples=1", "decode.eval_prompts=1",
                           "decode.max_new_tokens=4", "log.checkpoint_every=2")),
    "reply_dqn": Kind("langrl.config.reply_dqn:reply_dqn_config_from_data",
                      "langrl.agents.reply_dqn_run:train_reply_dqn", "langrl.agents.reply_dqn_run:evaluate_kind",
                      smoke=("reply_dqn.episodes=4", "reply_dqn.parallel=2", "reply_dqn.candidates=2",
                             "reply_dqn.learning_starts=2", "reply_dqn.batch_size=2", "sampling.max_new_tokens=4",
                             "eval.episodes=2", "log.checkpoint_every=1"),
                      report="langrl.agents.reply_dqn_run:write_reply_report"),
    "world_model": Kind("langrl.config.world_model:world_model_config_from_data",
                        "langrl.planning.world_model_run:train_world_model",
                        "langrl.planning.world_model_run:evaluate_kind",
                        smoke=("steps=2", "data.train_episodes=2", "data.eval_episodes=1", "data.limit=null",
                               "small.hidden_size=32", "small.num_layers=1", "train.batch_size=4",
                               "train.micro_batch_size=4", "eval.every=0", "eval.transitions=2", "eval.examples=1",
                               "max_new_tokens=8", "log.checkpoint_every=2"),
                        report="langrl.planning.world_model_run:write_world_model_report"),
}


def config_kind(data: dict[str, Any]) -> str:
    """The kind of run a raw config mapping describes: its ``kind``, else inferred (see the module doc)."""
    kind = data.get("kind", "agent" if "env" in data else "lm")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"kind = {show(kind)}: unknown kind of run; allowed: {', '.join(KINDS)}")
    return str(kind)


def load_any_config(source: ConfigSource, overrides: list[str] | tuple[str, ...] = ()) -> AnyConfig:
    """Read any kind of config (YAML path, dict, or a built config), apply overrides, validate."""
    if isinstance(source, RunConfig):
        if overrides:
            raise ConfigError("overrides need a YAML path or a dict, not an already built config")
        return source
    data, base = read_config_data(source, overrides)
    config: AnyConfig = KINDS[config_kind(data)].function("config")(data, base)
    return config


def kind_of(config: RunConfig) -> Kind:
    """The registry entry of a built config."""
    return KINDS[config.kind]


__all__ = [
    "ActorCriticConfig", "AgentConfig", "AnyConfig", "BayesConfig", "Config", "ConfigSource", "DPGConfig",
    "KINDS", "KLConfig", "Kind", "LogConfig", "LoraConfig", "OptimConfig", "PromptsConfig", "RunConfig",
    "SamplingSection", "Section", "TrainConfig", "config_kind", "config_to_yaml", "load_agent_config",
    "load_any_config", "kind_of", "load_config", "read_config_data", "format_errors", "set_override",
]
