"""Tier 2: the tabular run kind (``kind: tabular``) through the public API and the command line: a tiny
budget writes a complete run folder, a run stopped and resumed equals the uninterrupted one bit for bit,
bad configs fail in one line that names the field, and a run folder or checkpoint evaluates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

import langrl
from langrl.api import train
from langrl.cli import main
from langrl.config import load_any_config
from langrl.errors import ConfigError
from langrl.eval import evaluate
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import list_checkpoints

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny(**changes) -> dict:
    """Slippery FrozenLake, 3 chunks of 400 steps: seconds."""
    config = {"kind": "tabular", "env": {"id": "FrozenLake-v1", "kwargs": {"is_slippery": True}},
              "method": "double_q", "gamma": 0.9, "steps": 1200, "chunk_steps": 400, "num_envs": 4, "n_step": 2,
              "exploration": {"kind": "boltzmann", "start": 1.0, "end": 0.2}, "omega": 0.6,
              "eval": {"episodes": 10, "every": 2}, "log": {"checkpoint_every": 1, "tensorboard": False,
                                                            "progress": False}}
    config.update(changes)
    return config


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_tiny_run_writes_metrics_checkpoints_q_table_and_report(tmp_path):
    result = train(tiny(), output=tmp_path / "run")
    run = result.run_dir
    logged = rows(run)
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert [r["env/steps"] for r in logged] == [400, 800, 1200]
    for key in ("rollout/episode_return", "td/abs_error", "explore/temperature", "exact/max_abs_error"):
        assert all(key in r for r in logged), key
    assert logged[0]["explore/temperature"] > logged[-1]["explore/temperature"]
    assert "eval/mean_return" in logged[1] and "eval/mean_return" not in logged[0]  # every 2 chunks, and the end
    assert 0.0 <= logged[-1]["eval/success_rate"] <= 1.0
    table = load_file(str(run / "q_table.safetensors"))
    assert table["q"].shape == (16, 4) and float(table["counts"].sum()) > 0
    assert (run / "report.md").exists() and list_checkpoints(run)
    assert any("exact: max_abs_error" in line for line in result.summary["headline"])


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step, metrics):
        return step == self.step


def test_a_run_stopped_and_resumed_equals_the_uninterrupted_one(tmp_path):
    config = tiny(method="soft_q", exploration={"kind": "ucb", "c": 0.5}, n_step=3)
    whole = train(config, output=tmp_path / "whole")
    train(config, output=tmp_path / "part", callbacks=[StopAt(2)])
    assert [r["step"] for r in rows(tmp_path / "part")] == [1, 2]
    resumed = train(config, output=tmp_path / "part", resume=True)
    a, b = (load_file(str(r.run_dir / "q_table.safetensors")) for r in (whole, resumed))
    assert all(bool((a[k] == b[k]).all()) for k in ("q", "counts", "visits"))

    def measured(run_dir: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows(run_dir)]

    assert measured(tmp_path / "part") == measured(tmp_path / "whole")


@pytest.mark.parametrize(("change", "message"), [
    ({"exploration": {"knd": "ucb"}}, "exploration.knd: unknown field; did you mean 'kind'?"),
    ({"method": "q_lerning"}, "method = 'q_lerning': Input should be 'q_learning', 'double_q'"),
    ({"exploration": {"start": 1.5}}, "exploration.start = 1.5, exploration.end = 0.1: an epsilon is a probability"),
    ({"exploration": {"kind": "boltzmann", "end": 0.0}}, "a temperature must be > 0"),
    ({"num_envs": 16, "chunk_steps": 8}, "chunk_steps = 8: less than one step of every environment (num_envs = 16)"),
    ({"env": {"id": "langrl/TokenTree"}}, "env.reward: required for env.id langrl/TokenTree"),
    ({"env": {"id": "FrozenLake-v1", "reward": {"type": "vader"}}}, "env.reward: only env.id langrl/TokenTree"),
    ({"eval": {"greedy": False}}, "eval.greedy = false: only method soft_q"),
    ({"n_step": 0}, "n_step = 0: Input should be greater than or equal to 1"),
])
def test_bad_configs_fail_in_one_line_naming_the_field(change, message):
    with pytest.raises(ConfigError) as error:
        load_any_config(tiny(**change))
    text = str(error.value)
    assert message in text and "\n" not in text, text


def test_an_env_that_does_not_exist_or_is_not_discrete_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="env.id = 'FrozenLak-v1': .*use a registered id"):
        train(tiny(env={"id": "FrozenLak-v1"}), output=tmp_path / "a")
    with pytest.raises(ConfigError, match="CartPole-v1: its observation space is Box.*tabular methods need Discrete"):
        train(tiny(env={"id": "CartPole-v1"}), output=tmp_path / "b")


def test_a_run_folder_and_a_checkpoint_evaluate(tmp_path):
    config = tiny(steps=800)
    run = train(config, output=tmp_path / "run").run_dir
    from_run = evaluate(config, str(run), episodes=5)
    assert from_run["episodes"] == 5 and 0.0 <= from_run["mean_return"] <= 1.0 and "success_rate" in from_run
    assert from_run["source"].endswith("q_table.safetensors") and "exact/max_abs_error" in from_run
    from_checkpoint = langrl.evaluate(config, str(list_checkpoints(run)[-1]), episodes=5)
    assert from_checkpoint["mean_return"] == from_run["mean_return"]  # the same table, the same seeds
    with pytest.raises(ConfigError, match="neither a tabular run folder"):
        evaluate(config, str(tmp_path), episodes=1)
    with pytest.raises(ConfigError, match=r"its table has shape \(16, 4\), env CliffWalking-v1 needs \(48, 4\)"):
        evaluate(tiny(env={"id": "CliffWalking-v1"}), str(run), episodes=1)


def test_the_command_line_trains_the_frozenlake_config(tmp_path, capsys):
    code = main(["train", str(CONFIGS / "qlearning_frozenlake.yaml"), "--set", "steps=800", "--set",
                 "chunk_steps=400", "--set", "eval.episodes=5", "--set", "log.progress=false",
                 "--output", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "q_learning on FrozenLake-v1: 800 env steps" in out and "exact: max_abs_error" in out
    saved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert saved["kind"] == "tabular" and saved["steps"] == 800
