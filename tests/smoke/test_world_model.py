"""Tier 2: the LM world model of BabyAI text: the text format, seeded transitions, the small word-level model,
the SFT loss, a ``kind: world_model`` run through the harness (resume equals uninterrupted), ``langrl eval``,
and a ``kind: plan`` agent imagining with the trained model."""

from __future__ import annotations

import json

import pytest
import torch

import langrl
from langrl.cli import main
from langrl.errors import ConfigError
from langrl.models import load_lm
from langrl.models.small import small_text_lm
from langrl.planning.lm_world_model import LMWorldModel, one_step_accuracy, sft_loss
from langrl.planning.transitions import (
    Transition,
    collect_transitions,
    parse_target,
    prompt_text,
    target_text,
    transition_texts,
)
from langrl.protocols import WorldModel
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import list_checkpoints
from langrl.run.io import read_jsonl

pytest.importorskip("minigrid")

ENV = "langrl/BabyAI-GoToLocal-Text-v0"


def world_model_config(**sections):
    """A world-model run small enough for seconds: a 1-layer small model on 3 bot episodes."""
    config = {
        "kind": "world_model", "model": "small", "steps": 4, "threads": 1, "max_new_tokens": 12,
        "small": {"hidden_size": 32, "num_layers": 1},
        "data": {"train_episodes": 3, "eval_episodes": 1},
        "train": {"batch_size": 4, "micro_batch_size": 2},
        "optim": {"lr": 3e-3, "warmup_steps": 0},
        "eval": {"every": 2, "transitions": 3, "batch": 3, "examples": 2},
        "log": {"checkpoint_every": 2, "progress": False, "report_to": []},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained world-model run shared by the tests that use a trained model."""
    return langrl.train(world_model_config(steps=6), output=tmp_path_factory.mktemp("wm") / "run").run_dir


def test_text_format_round_trips_and_malformed_generations_parse():
    obs, nxt = "Goal: go to the red ball.\nYou carry nothing.", "Goal: go to the red ball.\nYou see a wall."
    assert prompt_text(obs, "go forward") == obs + "\nAction: go forward\nNext:\n"
    assert parse_target(target_text(nxt, 0.971875, True)) == (nxt, 0.97, True)
    assert parse_target(target_text(nxt, 0.0, False)) == (nxt, 0.0, False)
    assert parse_target(nxt) == (nxt, 0.0, False)  # cut before the reward line
    assert parse_target(nxt + "\nReward: ?\nDone: yes") == (nxt, 0.0, True)
    assert parse_target(nxt + "\nDone: maybe") == (nxt, 0.0, False)
    assert parse_target("") == ("", 0.0, False)
    assert parse_target("Reward: 0.5") == ("", 0.5, False)
    row = Transition(obs, "turn left", nxt, 0.5, True)
    assert Transition.from_dict(json.loads(json.dumps(row.to_dict()))) == row
    with pytest.raises(ConfigError, match="reward = 'high'"):
        Transition.from_dict({**row.to_dict(), "reward": "high"}, "line 3")


def test_collected_transitions_are_a_function_of_the_seeds():
    bot = collect_transitions(ENV, {}, 2, 0, "bot", epsilon=0.3)
    assert bot == collect_transitions(ENV, {}, 2, 0, "bot", epsilon=0.3)
    assert bot != collect_transitions(ENV, {}, 2, 1, "bot", epsilon=0.3)
    assert sum(t.done for t in bot) == 2 and all(t.reward > 0 for t in bot if t.done)  # the bot reaches goals
    assert all(a.next_observation == b.observation for a, b in zip(bot, bot[1:], strict=False) if not a.done)
    random = collect_transitions(ENV, {}, 2, 0, "random", max_steps=5)
    assert random == collect_transitions(ENV, {}, 2, 0, "random", max_steps=5) and len(random) <= 10
    assert {t.action for t in random} <= {"turn left", "turn right", "go forward", "pick up", "drop", "toggle"}


def test_the_small_tokenizer_round_trips_and_reloads(tmp_path):
    transitions = collect_transitions(ENV, {}, 2, 0, "bot")
    texts = transition_texts(transitions)
    lm = small_text_lm(texts, hidden_size=32, num_layers=1)
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load_lm(str(tmp_path), device="cpu")
    for text in texts:
        ids = again.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert again.tokenizer.decode(ids) == text and lm.tokenizer.unk_token_id not in ids
    assert "\n" in texts[0] and len(ids) < len(text) / 3  # words, not bytes
    assert again.tokenizer.decode(again.tokenizer("Reward: 0.43")["input_ids"]) == "Reward: 0.43"  # any number


def test_sft_loss_falls_on_logged_data():
    transitions = collect_transitions(ENV, {}, 2, 0, "bot")[:6]
    lm = small_text_lm(transition_texts(transitions), hidden_size=64, num_layers=2)
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = sft_loss(lm.model, lm.tokenizer, transitions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 2, losses


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, metrics):
        return step == self.step


def test_a_world_model_run_logs_reports_and_resumes_as_uninterrupted(tmp_path):
    full = langrl.train(world_model_config(), output=tmp_path / "full")
    stopped = langrl.train(world_model_config(), output=tmp_path / "part", callbacks=[StopAt(2)])
    assert [p.name for p in list_checkpoints(stopped.run_dir)] == ["step-2"]
    resumed = langrl.train(world_model_config(), output=tmp_path / "part", resume=True)
    a, b = read_jsonl(full.run_dir / "metrics.jsonl"), read_jsonl(resumed.run_dir / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4] and "eval/obs_exact" in b[1] and "eval/obs_exact" in b[3]
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        for key in {"loss/sft", "grad/norm", "eval/obs_line_f1", "eval/reward_accuracy", "eval/loss"} & set(x):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (x["step"], key)
    run = full.run_dir
    assert len(read_jsonl(run / "transitions.jsonl")) > 3 and len(read_jsonl(run / "eval_transitions.jsonl")) >= 3
    assert [r["step"] for r in read_jsonl(run / "predictions.jsonl")] == [4, 4]
    report = (run / "report.md").read_text()
    assert "Held-out one-step accuracy" in report and "Predicted (reward" in report
    assert full.summary["headline"] and full.metrics["eval/transitions"] == 3


def test_the_lm_world_model_is_deterministic_and_loads_from_its_run(trained):
    model = LMWorldModel.load(trained)
    assert isinstance(model, WorldModel) and model.max_new_tokens == 12  # the run's own decoding cap
    held_out = [Transition.from_dict(r) for r in read_jsonl(trained / "eval_transitions.jsonl")][:3]
    first = model.step(held_out[0].observation, held_out[0].action)
    assert model.step(held_out[0].observation, held_out[0].action) == first
    states, actions = [t.observation for t in held_out], [t.action for t in held_out]
    assert model.step_many(states, actions) == model.step_many(states, actions)
    assert model.calls == 2 + 2 * len(held_out)
    scores = one_step_accuracy(model, held_out, batch_size=2)
    assert scores["transitions"] == 3 and 0 <= scores["obs_line_f1"] <= 1


def test_a_pretrained_lm_trains_a_lora_adapter_and_loads_back(tmp_path):
    """``tiny`` stands in for the embedded SmolLM2: the checkpoint holds the adapter, loaded onto its base."""
    result = langrl.train(world_model_config(model="tiny", lora={"r": 4}, steps=2), output=tmp_path / "run")
    checkpoint = list_checkpoints(result.run_dir)[-1]
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    model = LMWorldModel.load(result.run_dir)
    observation, reward, done = model.step("Goal: go to the red ball.\nYou carry nothing.", "go forward")
    assert isinstance(observation, str) and isinstance(reward, float) and isinstance(done, bool)


def test_langrl_eval_prints_the_held_out_one_step_accuracy(trained, capsys):
    assert main(["eval", "configs/world_model_babyai.yaml", "--model", str(trained), "--set", "data.eval_episodes=1",
                 "--set", "eval.transitions=2", "--set", "threads=1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["transitions"] == 2 and result["max_new_tokens"] == 12 and result["checkpoint"].endswith("step-6")
    assert {"obs_exact", "obs_line_f1", "reward_accuracy", "success_accuracy", "done_accuracy", "loss"} <= set(result)


def test_a_planner_imagines_with_the_trained_world_model(trained):
    plan = {"kind": "plan", "model": "uniform", "threads": 1,
            "env": {"id": ENV, "max_episode_steps": 2},
            "world_model": {"type": "lm", "path": str(trained)},
            "planner": {"type": "mcts", "simulations": 3, "max_depth": 2, "value": "zero"},
            "eval": {"episodes": 1}}
    result = langrl.evaluate(plan, "uniform")
    assert result["world_model"] == "lm" and result["decisions"] == 2 and result["calls_per_decision"] > 0


@pytest.mark.parametrize("sets, field", [
    (["lora.r=4"], "lora"),
    (["data.eval_seed_start=2"], "data.eval_seed_start"),
    (["data.policy=greedy"], "data.policy"),
    (["data.limit=100000"], "data.limit"),
    (["data.file=missing.jsonl"], "data.file"),
    (["data.env_id=langrl/CartPole-Text-v0"], "data.policy"),
])
def test_bad_world_model_inputs_name_the_field(tmp_path, sets, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as info:
        langrl.train(world_model_config(), output=tmp_path / "run", overrides=sets)
    assert "\n" not in str(info.value)


def test_bad_plan_inputs_name_the_world_model_path(tmp_path):
    plan = {"kind": "plan", "model": "uniform", "world_model": {"type": "lm"}}
    with pytest.raises(ConfigError, match=r"world_model\.path"):
        langrl.evaluate(plan, "uniform")
    with pytest.raises(ConfigError, match=r"world_model\.path = .*no such folder"):
        langrl.evaluate({**plan, "world_model": {"type": "lm", "path": str(tmp_path / "nothing")}}, "uniform")
    with pytest.raises(ConfigError, match="--model small"):
        langrl.evaluate(world_model_config(), "small")
