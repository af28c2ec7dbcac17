"""The public entry points that take every kind of config: ``train`` (and ``evaluate`` in `langrl.eval`)."""

from __future__ import annotations

from pathlib import Path

from langrl.config import AgentConfig, AnyConfig, ConfigSource, load_any_config
from langrl.run.harness import TrainResult, resolve_run_dir, run_name


def train(config: ConfigSource, output: str | Path | None = None, resume: bool = False,
          overrides: list[str] | tuple[str, ...] = (), allow_config_change: bool = False) -> TrainResult:
    """Train as ``config`` says, whatever its kind (``lm``: `langrl.lm.trainer.train`; ``agent``:
    `langrl.agents.lm_agent.train_agent`).

    ``config`` is a YAML path, a dict or a built config; without ``output`` the run goes to
    ``runs/<config name>-<timestamp>``. ``resume`` continues the run folder (the newest such run without
    ``output``) from its last intact checkpoint: the run's saved ``config.yaml`` is the source of truth
    (a YAML ``config`` is replaced by it, with ``overrides`` applied), and changes beyond ``steps``
    (upward) and ``log.*`` are refused unless ``allow_config_change`` (then recorded in the run folder).
    """
    run_dir = resolve_run_dir(run_name(config, "run"), output, resume)
    cfg = resumed_config(run_dir, config, overrides) if resume else load_any_config(config, overrides)
    if isinstance(cfg, AgentConfig):
        from langrl.agents.lm_agent import train_agent

        return train_agent(cfg, output=run_dir, resume=resume, allow_config_change=allow_config_change)
    from langrl.lm.trainer import train as train_lm

    return train_lm(cfg, output=run_dir, resume=resume, allow_config_change=allow_config_change)


def resumed_config(run_dir: Path, config: ConfigSource, overrides: list[str] | tuple[str, ...]) -> AnyConfig:
    """The config a resumed run continues with: its saved ``config.yaml`` plus ``overrides`` when ``config``
    is a file (what the command line passes), else ``config`` itself (checked against the saved one)."""
    saved = run_dir / "config.yaml"
    if isinstance(config, (str, Path)) and saved.is_file():
        return load_any_config(saved, overrides)
    return load_any_config(config, overrides)
