"""The public entry points that take every kind of config: ``train`` (and ``evaluate`` in `langrl.eval`)."""

from __future__ import annotations

from pathlib import Path

from langrl.config import AgentConfig, ConfigSource, load_any_config
from langrl.run.harness import TrainResult, run_name


def train(config: ConfigSource, output: str | Path | None = None, resume: bool = False,
          overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Train as ``config`` says, whatever its kind (``lm``: `langrl.lm.trainer.train`; ``agent``:
    `langrl.agents.lm_agent.train_agent`). ``config`` is a YAML path, a dict or a built config; without
    ``output`` the run goes to ``runs/<config name>-<timestamp>``; ``resume`` continues the run folder
    (the newest such run without ``output``) from its last checkpoint."""
    cfg = load_any_config(config, overrides)
    name = run_name(config, "agent" if isinstance(cfg, AgentConfig) else "run")
    if isinstance(cfg, AgentConfig):
        from langrl.agents.lm_agent import train_agent

        return train_agent(cfg, output=output or default_output(name, resume), resume=resume)
    from langrl.lm.trainer import train as train_lm

    return train_lm(cfg, output=output or default_output(name, resume), resume=resume)


def default_output(name: str, resume: bool) -> Path:
    """Where a run named ``name`` goes when no ``--output`` is given (see `resolve_run_dir`)."""
    from langrl.run.harness import resolve_run_dir

    return resolve_run_dir(name, None, resume)
