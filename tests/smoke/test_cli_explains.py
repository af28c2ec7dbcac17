"""The command line explains itself: defaults in --help, configs shown with their descriptions, the JSON
schema of each kind, what langrl offers (list) and runs on (env), and --smoke shrinking a config."""

from __future__ import annotations

import json

import pytest

from langrl.cli import build_parser, main


def help_text(*command: str) -> str:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command[0]]  # type: ignore[union-attr]
    return sub.format_help()


def test_help_shows_the_defaults():
    text = " ".join(help_text("generate").split())
    assert "completions per prompt (default: 1)" in text
    assert "(default: 0)" in text  # a zero default is shown, not mistaken for "no default"
    assert "(default: None)" not in text and "(default: False)" not in text


def test_config_show_prints_every_key_with_its_description(capsys):
    assert main(["config", "show", "configs/toy_exact.yaml", "--set", "steps=7"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7  # training steps" in out
    assert "  coef: 0.2  # beta" in out  # nested sections are indented under their name


def test_config_schema_is_json_for_every_existing_kind(capsys):
    assert main(["config", "schema", "agent"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "ppo" in schema["properties"] and schema["additionalProperties"] is False
    assert main(["config", "schema", "nope"]) == 2
    assert "kind = 'nope': unknown kind of run" in capsys.readouterr().err


def test_list_and_env(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for expected in ("kinds of run", "grpo", "vader", "langrl/CartPole-Text-v0", "configs/toy_exact.yaml"):
        assert expected in out
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch: " in out and "device: " in out


def test_smoke_switch_shrinks_a_config_to_seconds(tmp_path, capsys):
    assert main(["train", "configs/toy_exact.yaml", "--smoke", "--output", str(tmp_path / "run"),
                 "--set", "log.tensorboard=false"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 2


@pytest.mark.parametrize("kind", ["lm", "agent", "tabular", "dqn", "offline", "plan", "world_model"])
def test_every_kind_has_smoke_overrides_that_validate(kind, tmp_path):
    from langrl.config import KINDS, load_any_config

    config = {"lm": "configs/toy_exact.yaml", "agent": "configs/babyai_goto.yaml", "tabular": "configs/soft_q_toy.yaml",
              "dqn": "configs/dqn_cartpole.yaml", "offline": "configs/ilql_toy.yaml",
              "plan": "configs/dyna_toy.yaml", "world_model": "configs/world_model_babyai.yaml"}[kind]
    cfg = load_any_config(config, list(KINDS[kind].smoke))
    assert cfg.kind == kind


def test_the_config_reference_in_docs_is_current():
    """docs/config.md is generated from the code (python -m langrl.config.describe > docs/config.md)."""
    from pathlib import Path

    from langrl.config.describe import reference_markdown

    docs = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert docs.read_text(encoding="utf-8") == reference_markdown(), "regenerate docs/config.md"


def test_field_types_read_as_written():
    """Constraints and module paths stay out of the reference's type column; unions read with ``|``."""
    from typing import Annotated, Literal

    from pydantic import Field

    from langrl.config.describe import type_text

    beta = Annotated[float, Field(ge=0, lt=1)]
    assert type_text(tuple[beta, beta]) == "tuple[float, float]"
    assert type_text(list[Annotated[int, Field(gt=0)]]) == "list[int]"
    assert type_text(int | list[str] | None) == "int | list[str] | None"
    assert type_text(Literal["a", "b"]) == "Literal['a', 'b']"
