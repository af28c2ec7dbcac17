"""Tier 2: DQN collecting in shards (``distributed``): 2 Ray workers reproduce the in-process run with the same
shards bit for bit, with one of them killed mid-run (numeric network) and with the LM encoder; a sharded run
resumed from a checkpoint logs and ends as the uninterrupted one; and bad shard settings are one clear line.
The step-by-step loop (no ``distributed``) is what tests/smoke/test_dqn*.py check. One torch thread everywhere
(``threads: 1``; the workers take the run's threads): CPU kernels may round differently with more threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from langrl.agents.dqn_run import make_dqn_env
from langrl.agents.encoder import LMEncoder
from langrl.api import train
from langrl.errors import ConfigError
from langrl.models.loading import load_lm
from langrl.run.callbacks import Callback


def numeric_config(**distributed) -> dict:
    """400 env steps of 4 CartPole-v1 environments, an MLP 32 x 32, training every 10 vector steps."""
    return {"kind": "dqn", "steps": 400, "seed": 5, "threads": 1, "env": {"num_envs": 4},
            "dqn": {"learning_starts": 100, "train_freq": 40, "gradient_steps": 4, "target_update_interval": 20},
            "network": {"hidden": [32, 32]}, "eval": {"every": 200, "episodes": 2, "test_episodes": 2},
            "log": {"every": 100, "checkpoint_every": 200, "tensorboard": False, "progress": False},
            "distributed": distributed}


def text_config(**distributed) -> dict:
    """CartPole-Text through the tiny LM's first block: the statistics the shards' features feed."""
    return {**numeric_config(**distributed), "model": "tiny", "steps": 200, "env": {"id": "langrl/CartPole-Text-v0",
                                                                                  "num_envs": 4},
            "network": {"type": "lm_encoder", "layers": 1, "hidden": [16], "max_tokens": 128},
            "eval": {"every": 100, "episodes": 1, "test_episodes": 1},
            "log": {"every": 50, "checkpoint_every": 100, "tensorboard": False, "progress": False}}


CONFIGS = {"mlp": numeric_config, "lm_encoder": text_config}


def rows(run: Path) -> list[dict]:
    """metrics.jsonl without the timings."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    last = max((run / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    return {p.name: load_file(str(p)) for p in last.glob("*.safetensors")}


def same_run(a: Path, b: Path) -> bool:
    assert rows(a) == rows(b)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() == {"q.safetensors", "target.safetensors", "best.safetensors"}
    for name in wa:
        assert wa[name].keys() == wb[name].keys()
        assert all(torch.equal(wa[name][k], wb[name][k]) for k in wa[name]), name
    return True


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The runs every other layout must reproduce: 2 shards stepped in the learner's process."""
    root = tmp_path_factory.mktemp("in_process")
    return {name: train(make(shards=2), output=root / name).run_dir for name, make in CONFIGS.items()}



@pytest.mark.ray
def test_two_workers_one_killed_reproduce_the_in_process_run(tmp_path, in_process, kill_worker):
    config = numeric_config(rollout_workers=2)  # shards: one per worker
    killed = train(config, output=tmp_path / "two", callbacks=[kill_worker(100)])
    assert same_run(in_process["mlp"], killed.run_dir)
    logged = rows(killed.run_dir)
    assert any("loss/td" in r for r in logged) and any("rollout/episode_return" in r for r in logged)


@pytest.mark.ray
def test_lm_encoder_on_two_workers_reproduces_the_in_process_run(tmp_path, ray_cluster, in_process):
    # the workers encode what their shards see; the learner takes those features into its cache and its
    # statistics in shard order, and encodes only what no shard saw (episodes' last observations, evaluations)
    two = train(text_config(rollout_workers=2), output=tmp_path / "two").run_dir
    assert same_run(in_process["lm_encoder"], two)
    logged = [r for r in rows(two) if "encoder/cache_misses" in r]
    assert 0 < logged[-1]["encoder/cache_misses"] < logged[-1]["env/steps"]


class Interrupt(Exception):
    pass


class CrashAfterCheckpoint(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_checkpoint(self, step: int, path: Path) -> None:
        if step == self.step:
            raise Interrupt(f"stopped after {path}")


@pytest.mark.parametrize("network", ["mlp", "lm_encoder"])
def test_sharded_run_resumes_as_the_uninterrupted_one(tmp_path, in_process, network):
    config = CONFIGS[network](shards=2)
    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        train(config, output=cut, callbacks=[CrashAfterCheckpoint(config["log"]["checkpoint_every"])])
    train(config, output=cut, resume=True)
    assert same_run(in_process[network], cut)


def test_sharded_collection_is_its_own_stream(in_process, tmp_path):
    # the step-by-step loop acts with the learner's generator: another run, as documented
    single = train(numeric_config(), output=tmp_path / "single").run_dir
    assert rows(single) != rows(in_process["mlp"])


@pytest.mark.parametrize(("distributed", "message"), [
    ({"shards": 5}, r"invalid config: distributed.shards=5 is more than env.num_envs=4: each shard needs an "
                    r"environment; lower distributed.shards or raise env.num_envs"),
    ({"learners": 2}, r"a dqn run takes distributed.rollout_workers and shards; distributed.learners and "
                      r"overlap apply to kind: lm runs"),
])
def test_bad_shard_settings_are_one_clear_line(tmp_path, distributed, message):
    with pytest.raises(ConfigError, match=message) as error:
        train(numeric_config(**distributed), output=tmp_path / "run")
    assert "\n" not in str(error.value)


def test_resuming_with_other_shards_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(numeric_config(shards=2), output=run, callbacks=[CrashAfterCheckpoint(200)])
    with pytest.raises(ConfigError, match=r"collected in 2 shards, the config asks for 4"):
        train(numeric_config(shards=4), output=run, resume=True, allow_config_change=True)


def test_shards_encode_one_observation_per_pass_and_the_learner_takes_their_features():
    lm = load_lm("tiny", device="cpu")
    env = make_dqn_env("langrl/CartPole-Text-v0", {}, None, lm.tokenizer, 128)
    obs = [env.reset(seed=0)[0]]
    for action in (0, 1, 0):
        obs.append(env.step(action)[0])
    ids = torch.as_tensor(np.stack(obs))

    def encoder(batch_misses: bool) -> LMEncoder:
        return LMEncoder(env.observation_space, lm=lm, normalize=False, layers=1, batch_misses=batch_misses)

    shard, learner = encoder(batch_misses=False), encoder(batch_misses=True)
    features = shard(ids)
    assert shard.lm_forward_calls == 4  # one pass per observation: its features depend on it alone
    torch.testing.assert_close(features, encoder(batch_misses=True)(ids))
    learner.remember(ids[:2], features[:2])
    assert len(learner.cache) == 2 and learner.cache.hits == learner.cache.misses == 0  # no lookup counted
    assert torch.equal(learner(ids)[:2], features[:2]) and learner.lm_forward_calls == 1  # the rest, one pass
