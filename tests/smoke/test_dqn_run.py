"""Tier 2: ``kind: dqn`` through ``langrl.train``: it trains and logs what the report reads, tests the final and
the best network, resumes exactly where an interrupted run stopped (numeric and LM-encoder networks), its
evaluation returns mean_return, and bad configs are one clear line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from langrl.api import train
from langrl.errors import ConfigError
from langrl.eval import evaluate
from langrl.run.callbacks import Callback

STEPS = 600
ROOT = Path(__file__).resolve().parents[2]


def numeric_config(**sections) -> dict:
    config = {"kind": "dqn", "steps": STEPS, "seed": 3, "threads": 1,
              "dqn": {"learning_starts": 200, "train_freq": 50, "gradient_steps": 4, "target_update_interval": 20},
              "network": {"hidden": [32]}, "eval": {"every": 300, "episodes": 2, "test_episodes": 3},
              "log": {"every": 100, "checkpoint_every": 300, "tensorboard": False, "progress": False}}
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def text_config() -> dict:
    return {**numeric_config(network={"type": "lm_encoder", "layers": 1, "hidden": [16], "max_tokens": 128},
                             dqn={"batch_size": 16}),
            "model": "tiny", "steps": 300, "env": {"id": "langrl/CartPole-Text-v0"},
            "eval": {"every": 200, "episodes": 2, "test_episodes": 2},
            "log": {"every": 100, "checkpoint_every": 200, "tensorboard": False, "progress": False}}


def rows(run: Path) -> list[dict]:
    """metrics.jsonl without the timings (they differ between any two runs)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


class Interrupt(Exception):
    pass


class CrashAfterCheckpoint(Callback):
    """Stands for a killed process: raises once the checkpoint of ``step`` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_checkpoint(self, step: int, path: Path) -> None:
        if step == self.step:
            raise Interrupt(f"stopped after {path}")


def test_dqn_run_trains_logs_tests_and_evaluates(tmp_path):
    run = tmp_path / "run"
    result = train(numeric_config(), output=run)
    logged = rows(run)
    assert [r["step"] for r in logged][:6] == [100, 200, 300, 400, 500, 600]
    for key in ("env/steps", "rollout/episode_return", "loss/td", "explore/epsilon", "eval/mean_return"):
        assert any(key in r for r in logged), key
    assert all(math.isfinite(v) for r in logged for v in r.values() if isinstance(v, float))
    timed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["time/elapsed_s"] > 0 for r in timed if "loss/td" in r)
    assert [r["explore/epsilon"] for r in logged[:2]] == [1.0, pytest.approx(0.04)]  # random warm-up, then epsilon
    assert [r["eval/episodes"] for r in logged if "eval/mean_return" in r] == [2, 2]
    assert result.metrics["final/episodes"] == 3 and result.metrics["best/env_steps"] in (300, 600)
    assert result.summary["evaluations"] == [[r["env/steps"], r["eval/mean_return"]] for r in logged
                                             if "eval/mean_return" in r]
    weights = load_file(str(run / "checkpoints" / "step-600" / "q.safetensors"))
    torch.manual_seed(3)
    initial = torch.nn.Linear(4, 32).weight  # the MLP's first layer, as the learner initialised it
    assert not torch.equal(weights["net.0.weight"], initial)
    assert (run / "report.md").exists()

    measured = evaluate(numeric_config(), str(run), episodes=3)
    assert measured["network"] == "best" and measured["episodes"] == 3
    assert measured["mean_return"] == measured["best"]["mean_return"] == result.metrics["best/mean_return"]
    assert measured["final"]["mean_return"] == result.metrics["final/mean_return"]
    checkpoint = evaluate(numeric_config(), str(run / "checkpoints" / "step-300"), episodes=2)
    assert checkpoint["best_env_steps"] == 300 and checkpoint["seeds"] == [2_000_000, 2_000_001]


@pytest.mark.parametrize("make_config", [numeric_config, text_config], ids=["mlp", "lm_encoder"])
def test_resumed_run_logs_and_ends_as_the_uninterrupted_one(tmp_path, make_config):
    config = make_config()
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(config, output=whole)
    stop = config["log"]["checkpoint_every"]
    with pytest.raises(Interrupt):
        train(config, output=resumed, callbacks=[CrashAfterCheckpoint(stop)])
    assert max(r["step"] for r in rows(resumed)) == stop
    train(config, output=resumed, resume=True)
    assert rows(resumed) == rows(whole)
    last = f"step-{config['steps']}"
    for name in ("q", "target", "best"):
        a, b = (load_file(str(run / "checkpoints" / last / f"{name}.safetensors")) for run in (whole, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_text_network_learns_its_head_and_keeps_the_lm_out_of_checkpoints(tmp_path):
    run = tmp_path / "run"
    result = train(text_config(), output=run)
    assert math.isfinite(result.metrics["loss/td"]) and "best/mean_return" in result.metrics
    q = load_file(str(run / "checkpoints" / "step-300" / "q.safetensors"))
    assert set(q) == {"head.net.0.weight", "head.net.0.bias", "head.net.2.weight", "head.net.2.bias",
                      "standardize.running_mean", "standardize.running_var", "standardize.running_count"}
    target = load_file(str(run / "checkpoints" / "step-300" / "target.safetensors"))
    assert float(q["standardize.running_count"]) > 0  # statistics of the visited states, copied to the target
    assert torch.equal(q["standardize.running_mean"], target["standardize.running_mean"])
    measured = evaluate(text_config(), str(run), episodes=2)
    assert measured["env"] == "langrl/CartPole-Text-v0" and math.isfinite(measured["mean_return"])


@pytest.mark.parametrize(("change", "message"), [
    ({"steps": 1_000, "dqn": {"learning_starts": 1_000}},
     r"dqn.learning_starts = 1000 >= steps = 1000: DQN would never train; lower dqn.learning_starts or raise steps"),
    ({"dqn": {"batch_size": 64, "buffer_size": 32}}, r"dqn.batch_size = 64 > dqn.buffer_size = 32"),
    ({"eval": {"every": 100, "seed_start": 10, "episodes": 5, "test_seed_start": 12}},
     r"eval.test_seed_start = 12: the test seeds overlap the evaluation seeds 10..14"),
    ({"network": {"layers": 4}}, r"network.layers = 4 applies to network.type lm_encoder only"),
    ({"dqn": {"learnig_rate": 1e-3}}, r"dqn.learnig_rate: unknown field; did you mean 'learning_rate'\?"),
    ({"dqn": {"gamma": 1.5}}, r"dqn.gamma = 1.5"),
    ({"env": {"id": "langrl/CartPole-Text-v0"}}, r"network.type = 'mlp' reads numeric observations; env.id = "
     r"'langrl/CartPole-Text-v0' gives Text: set network.type: lm_encoder"),
    ({"network": {"type": "lm_encoder"}}, r"network.type = 'lm_encoder' reads text observations; env.id = "
     r"'CartPole-v1' gives Box\(4,\): set network.type: mlp"),
    ({"env": {"id": "Pendulum-v1"}}, r"env.id = 'Pendulum-v1' has actions Box\(1,\): DQN needs Discrete actions"),
])
def test_bad_dqn_configs_are_one_clear_line(tmp_path, change, message):
    config = numeric_config(**{k: v for k, v in change.items() if isinstance(v, dict)})
    config.update({k: v for k, v in change.items() if not isinstance(v, dict)})
    with pytest.raises(ConfigError, match=message) as error:
        train(config, output=tmp_path / "run")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_evaluating_a_folder_that_is_no_dqn_run_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"not a DQN run folder or checkpoint"):
        evaluate(numeric_config(), str(tmp_path))


def test_shipped_configs_validate_and_the_numeric_one_runs_shrunk_from_the_cli(tmp_path, capsys):
    from langrl.cli import main
    from langrl.config import load_any_config

    text = load_any_config(ROOT / "configs" / "dqn_cartpole_text.yaml")
    assert text.kind == "dqn" and text.network.type == "lm_encoder" and text.network.layers == 16
    shrink = ["steps=400", "dqn.learning_starts=200", "dqn.train_freq=100", "dqn.gradient_steps=2",
              "network.hidden=[16]", "eval.every=200", "eval.episodes=1", "eval.test_episodes=1", "log.every=200",
              "log.checkpoint_every=400", "log.progress=false"]
    config, run = str(ROOT / "configs" / "dqn_cartpole.yaml"), str(tmp_path / "run")
    assert main(["train", config, "--output", run, *(f"--set={s}" for s in shrink)]) == 0
    printed = capsys.readouterr().out
    assert "final network: mean return" in printed and "best network: mean return" in printed
    assert main(["eval", config, "--model", run, "--episodes", "2"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["episodes"] == 2 and measured["network"] == "best" and math.isfinite(measured["mean_return"])
