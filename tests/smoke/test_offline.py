"""Tier 2: offline runs (``kind: offline``: ILQL, filtered BC, RWR) on the tiny model, end to end."""

import json
import math

import pytest
import torch

import langrl
from langrl.config import load_any_config
from langrl.errors import ConfigError
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import list_checkpoints
from langrl.run.io import read_jsonl

ROWS = [("Say hi", "hi there", 1.0), ("Say hi", "go away", -0.5), ("Say yes", "yes", 0.8),
        ("Say yes", "no no", -1.0), ("Say no", "no", 0.3), ("Say no", "maybe", 0.0)]


def write_rows(path, rows=ROWS, **extra):
    path.write_text("".join(json.dumps({"prompt": p, "completion": c, "reward": r, **extra}) + "\n"
                            for p, c, r in rows))
    return path


def offline_config(dataset, **sections):
    config = {
        "kind": "offline", "model": "tiny", "algorithm": "ilql", "steps": 3, "threads": 1,
        "dataset": {"path": str(dataset)},
        "prompts": {"items": ["hi", "yes", "no"], "template": "Say {item}"},
        "reward": {"type": "length", "target": 4, "unit": "chars"},
        "decode": {"max_new_tokens": 6, "samples": 2, "eval_prompts": 2},
        "train": {"batch_size": 4, "micro_batch_size": 2},
        "optim": {"lr": 1e-3},
        "log": {"checkpoint_every": 2, "progress": False, "tensorboard": False},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.mark.parametrize("algorithm", ["ilql", "filtered_bc", "rwr"])
def test_each_algorithm_trains_and_checkpoints(tmp_path, algorithm):
    config = offline_config(write_rows(tmp_path / "data.jsonl"), algorithm=algorithm)
    result = langrl.train(config, output=tmp_path / "run")
    rows = read_jsonl(result.run_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps[0] == 0 and steps[-1] == 3 and "reward/mean" in rows[0] and "kl/ref" in rows[-1]
    assert result.summary["steps"] == 3  # the report counts training steps, not the step-0 evaluation row
    assert rows[0]["kl/ref"] == pytest.approx(0.0, abs=1e-5)  # before training: the base model itself
    train_rows = [r for r in rows if "loss/total" in r]
    assert len(train_rows) == 3 and all(math.isfinite(r["loss/total"]) for r in train_rows)
    checkpoint = list_checkpoints(result.run_dir)[-1]
    if algorithm == "ilql":
        assert {"loss/q", "loss/v", "loss/cql", "loss/policy", "value/q"} <= set(train_rows[-1])
        assert all((checkpoint / f"{name}.safetensors").is_file() for name in ("q", "q_target", "v"))
    assert rows[-1]["kl/ref"] > 0  # the policy moved away from the base model
    assert (result.run_dir / "report.md").is_file()
    assert {r["phase"] for r in read_jsonl(result.run_dir / "eval_samples.jsonl")} == {"before", "after"}


def test_ilql_separate_trunk_keeps_pi_beta_frozen(tmp_path):
    config = offline_config(write_rows(tmp_path / "data.jsonl"), ilql={"trunk": "separate", "policy_coef": 1.0})
    result = langrl.train(config, output=tmp_path / "run", overrides=["decode.beta=0"])
    rows = read_jsonl(result.run_dir / "metrics.jsonl")
    assert "loss/policy" not in rows[-2]  # no LM-head loss: pi_beta is the frozen base model
    assert rows[-1]["kl/ref"] == pytest.approx(0.0, abs=1e-5)  # beta 0 decodes pi_beta = the base model


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, metrics):
        return step == self.step


def test_resume_equals_uninterrupted(tmp_path):
    data = write_rows(tmp_path / "data.jsonl")
    full = langrl.train(offline_config(data, steps=4), output=tmp_path / "full")
    stopped = langrl.train(offline_config(data, steps=4), output=tmp_path / "part", callbacks=[StopAt(2)])
    assert [p.name for p in list_checkpoints(stopped.run_dir)] == ["step-2"]
    resumed = langrl.train(offline_config(data, steps=4), output=tmp_path / "part", resume=True)
    a = [r for r in read_jsonl(full.run_dir / "metrics.jsonl") if "loss/total" in r]
    b = [r for r in read_jsonl(resumed.run_dir / "metrics.jsonl") if "loss/total" in r]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        for key in ("loss/q", "loss/v", "loss/cql", "loss/policy", "value/q"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (x["step"], key)
    assert full.metrics["reward/mean"] == pytest.approx(resumed.metrics["reward/mean"], abs=1e-6)


def test_a_runs_samples_jsonl_is_a_dataset(tmp_path, lm_config):
    lm_run = langrl.train(lm_config(steps=2, log__sample_every=1), output=tmp_path / "lm")
    samples = lm_run.run_dir / "samples.jsonl"
    assert len(read_jsonl(samples)) > 0
    result = langrl.train(offline_config(samples, algorithm="filtered_bc", steps=2), output=tmp_path / "run")
    assert result.metrics["loss/total"] > 0


def test_generate_samples_the_base_model_once(tmp_path):
    config = offline_config(tmp_path / "unused.jsonl", steps=2)
    config["dataset"] = {"generate": {"per_prompt": 3, "max_new_tokens": 5}}
    config["prompts"]["holdout"] = 1
    result = langrl.train(config, output=tmp_path / "run")
    rows = read_jsonl(result.run_dir / "dataset.jsonl")
    assert len(rows) == 2 * 3 and all(set(r) == {"prompt", "completion", "reward", "eos"} for r in rows)
    held_out = {r["prompt"] for r in read_jsonl(result.run_dir / "eval_samples.jsonl")}
    assert held_out.isdisjoint({r["prompt"] for r in rows})  # evaluation prompts never reach the dataset


def test_evaluate_a_run_and_a_model(tmp_path):
    config = offline_config(write_rows(tmp_path / "data.jsonl"))
    result = langrl.train(config, output=tmp_path / "run")
    out = langrl.evaluate(config, str(result.run_dir), num_prompts=2)
    assert out["checkpoint"].endswith("step-3") and out["completions"] == 4 and out["beta"] == 1.0
    assert math.isfinite(out["reward/mean"]) and out["kl/ref"] > 0
    base = langrl.evaluate(config, "tiny", num_prompts=2)
    assert base["checkpoint"] is None and base["kl/ref"] == pytest.approx(0.0, abs=1e-5)
    greedy = langrl.evaluate(config, str(result.run_dir), num_prompts=2, overrides=["decode.greedy=true"])
    assert greedy["completions"] == 4


@pytest.mark.parametrize(("change", "message"), [
    ({"dataset": {"path": "/no/such/file.jsonl"}}, "dataset.path = '/no/such/file.jsonl': no such file"),
    ({"dataset": {"path": None}}, "give exactly one of dataset.path"),
    ({"algorithm": "sft"}, "algorithm = 'sft'"),
    ({"ilql": {"tau": 1.5}}, "ilql.tau = 1.5"),
    ({"ilql": {"taus": 0.9}}, "did you mean 'tau'"),
    ({"dataset": {"generate": {}, "path": None}, "prompts": None}, "needs a prompts section"),
    ({"dataset": {"rendered": True}}, "dataset.rendered reads prompts already rendered"),
    ({"algorithm": "filtered_bc", "filtered_bc": {"min_reward": 5.0}},
     "filtered_bc.min_reward = 5.0: no row of the dataset scores above it"),
])
def test_bad_configs_are_one_line_errors(tmp_path, change, message):
    config = offline_config(write_rows(tmp_path / "data.jsonl"))
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and config.get(key) else value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        langrl.train(config, output=tmp_path / "run")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("line", "message"), [
    ('{"prompt": "a", "completion": "b"}', "row 2 has no 'reward' field"),
    ('{"prompt": "a", "reward": 1}', "row 2 has no 'completion' field"),
    ('{"prompt": 3, "completion": "b", "reward": 1}', "row 2: prompt = '3' is not a string"),
    ('{"prompt": "a", "completion": "b", "reward": null}', "row 2: reward = None is not a finite number"),
    ('{"prompt": "a", "completion": "b", "reward": 1, "eos": "yes"}', "row 2: eos = 'yes'"),
    ("not json", "not valid JSON"),
])
def test_bad_dataset_rows_are_one_line_errors(tmp_path, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b", "reward": 1}) + "\n" + line + "\n{}\n")
    with pytest.raises(ConfigError, match=message) as e:
        langrl.train(offline_config(path), output=tmp_path / "run")
    assert "\n" not in str(e.value) and "data.jsonl" in str(e.value)


def test_config_paths_are_relative_to_the_yaml(tmp_path):
    write_rows(tmp_path / "data.jsonl")
    config = offline_config("data.jsonl")
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    assert load_any_config(tmp_path / "c.yaml").dataset.path == str((tmp_path / "data.jsonl").resolve())


def test_rwr_and_filtered_bc_weights_reach_the_loss(tmp_path):
    from langrl.lm import offline

    cfg = load_any_config(offline_config(write_rows(tmp_path / "data.jsonl"), algorithm="filtered_bc",
                                         filtered_bc={"fraction": 0.33}))
    run = offline.build_run(cfg)
    offline.load_data(run, tmp_path)
    assert sorted(run.pool) == [0, 2]  # the two best rows (1.0 and 0.8)
    cfg = load_any_config(offline_config(write_rows(tmp_path / "data.jsonl"), algorithm="rwr"))
    run = offline.build_run(cfg)
    offline.load_data(run, tmp_path)
    assert float(run.weights.mean()) == pytest.approx(1.0) and int(run.weights.argmax()) == 0
    rewards = torch.tensor([r for _, _, r in ROWS])
    assert torch.equal(run.weights.argsort(), rewards.argsort())  # weights grow with the reward


def test_filtered_bc_min_reward_keeps_only_rewarded_rows(tmp_path):
    """With min_reward the pool is the top fraction's rows that score above it (here every row above 0.5)."""
    from langrl.lm import offline

    cfg = load_any_config(offline_config(write_rows(tmp_path / "data.jsonl"), algorithm="filtered_bc",
                                         filtered_bc={"fraction": 1.0, "min_reward": 0.5}))
    run = offline.build_run(cfg)
    offline.load_data(run, tmp_path)
    assert sorted(run.pool) == [0, 2]  # 1.0 and 0.8; 0.3, 0.0 and the negatives are out


def test_rendered_prompts_are_tokenised_as_they_are(tmp_path, tiny):
    """dataset.rendered: a row's prompt (e.g. a logged dialogue context) becomes exactly its tokens, no template
    around it; without it the same text is wrapped as a user message."""
    from langrl.lm import offline
    from langrl.lm.offline_data import encode_prompts

    rows = [("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "hello", 1.0)]
    config = offline_config(write_rows(tmp_path / "data.jsonl", rows), algorithm="filtered_bc", prompts=None,
                            reward=None)
    config["dataset"]["rendered"] = True
    run = offline.build_run(load_any_config(config))
    offline.load_data(run, tmp_path)
    text = rows[0][0]
    assert run.data.prompt_ids == [list(tiny.tokenizer(text, add_special_tokens=False)["input_ids"])]
    assert encode_prompts([text], tiny.tokenizer, chat=True) != run.data.prompt_ids
    result = langrl.train(config, output=tmp_path / "run")
    assert math.isfinite(result.metrics["loss/total"])
