"""The public entry points that take every kind of config: ``train`` (and ``evaluate`` in `langrl.eval`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from langrl.config import AnyConfig, ConfigSource, kind_of, load_any_config
from langrl.run.callbacks import Callback
from langrl.run.harness import TrainResult, resolve_run_dir, run_name


def train(config: ConfigSource, output: str | Path | None = None, resume: bool = False,
          overrides: list[str] | tuple[str, ...] = (), allow_config_change: bool = False,
          callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train as ``config`` says, whatever its kind (`langrl.config.KINDS` names each kind's loop).

    ``config`` is a YAML path, a dict or a built config; without ``output`` the run goes to
    ``runs/<config name>-<timestamp>``. ``resume`` continues the run folder (the newest such run without
    ``output``) from its last intact checkpoint: the run's saved ``config.yaml`` is the source of truth
    (a YAML ``config`` is replaced by it, with ``overrides`` applied), and changes beyond ``steps``
    (upward) and ``log.*`` are refused unless ``allow_config_change`` (then recorded in the run folder).
    ``callbacks`` (`langrl.run.callbacks.Callback`) see every logged step and may stop the run early.
    """
    run_dir = resolve_run_dir(run_name(config, "run"), output, resume)
    cfg = resumed_config(run_dir, config, overrides) if resume else load_any_config(config, overrides)
    loop = kind_of(cfg).function("train")
    result: TrainResult = loop(cfg, output=run_dir, resume=resume, allow_config_change=allow_config_change,
                               callbacks=callbacks)
    return result


def resumed_config(run_dir: Path, config: ConfigSource, overrides: list[str] | tuple[str, ...]) -> AnyConfig:
    """The config a resumed run continues with: its saved ``config.yaml`` plus ``overrides`` when ``config``
    is a file (what the command line passes), else ``config`` itself (checked against the saved one)."""
    saved = run_dir / "config.yaml"
    if isinstance(config, (str, Path)) and saved.is_file():
        return load_any_config(saved, overrides)
    return load_any_config(config, overrides)
