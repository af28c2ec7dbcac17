"""Tier 2: reply selection with DQN (``kind: reply_dqn``) playing its rounds in shards (``distributed``): 2 Ray
workers, one of them killed mid-run, reproduce the in-process run with the same shards bit for bit; a sharded run
resumes as the uninterrupted one; shards are their own stream; bad shard settings are one clear line. The
single-process loop (no ``distributed``) is what tests/smoke/test_reply_dqn.py checks. One torch thread everywhere
(``threads: 1``; the workers take the run's threads): CPU kernels may round differently with more threads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import langrl
from langrl.config import load_any_config
from langrl.errors import ConfigError
from langrl.run.callbacks import Callback

GOALS = {"goals": [{"id": "stuck", "opening": "My computer is frozen.", "required": [["restart"]],
                    "followups": ["It is still frozen."]}]}


@pytest.fixture(autouse=True)
def keep_threads():
    """Runs here set one torch thread; restore the count after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def config(**distributed: object) -> dict:
    """7 episodes of the tiny model on the one-goal help desk, 3 at a time (the last round: 1 episode, so one
    of 2 shards is empty), training from the first round on."""
    return {"kind": "reply_dqn", "model": "tiny", "seed": 3, "threads": 1,
            "env": {"id": "langrl/HelpDesk-v0", "kwargs": {"goals": GOALS, "split": "all", "max_turns": 3}},
            "sampling": {"max_new_tokens": 4},
            "reply_dqn": {"candidates": 3, "episodes": 7, "parallel": 3, "learning_starts": 2, "batch_size": 4,
                          "hidden": [16], "target_update_every": 3},
            "eval": {"episodes": 2}, "log": {"progress": False, "report_to": [], "checkpoint_every": 1},
            "distributed": distributed}


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
    assert wa.keys() == wb.keys() and {"q.safetensors", "target.safetensors"} <= wa.keys()
    for name in wa:
        assert wa[name].keys() == wb[name].keys()
        assert all(torch.equal(wa[name][k], wb[name][k]) for k in wa[name]), name
    assert (a / "evaluation.json").read_text() == (b / "evaluation.json").read_text()
    return True


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The run every other layout must reproduce: 2 shards played in the learner's process."""
    return langrl.train(config(shards=2), output=tmp_path_factory.mktemp("in_process") / "run").run_dir


def test_in_process_shards_train(in_process):
    logged = rows(in_process)
    assert [r["episode/count"] for r in logged] == [3, 6, 7]
    assert logged[-1]["replay/transitions"] > 0 and math.isfinite(logged[-1]["loss/td"])



@pytest.mark.ray
def test_two_workers_one_killed_reproduce_the_in_process_run(tmp_path, in_process, kill_worker):
    # shards: one per worker; worker 0 dies after round 1 and its replacement plays round 2's shard 0
    two = langrl.train(config(rollout_workers=2), output=tmp_path / "two", callbacks=[kill_worker(1)])
    assert same_run(in_process, two.run_dir)


class Interrupt(Exception):
    pass


class CrashAfterCheckpoint(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_checkpoint(self, step: int, path: Path) -> None:
        if step == self.step:
            raise Interrupt(f"stopped after {path}")


def test_sharded_run_resumes_as_the_uninterrupted_one(tmp_path, in_process):
    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        langrl.train(config(shards=2), output=cut, callbacks=[CrashAfterCheckpoint(1)])
    langrl.train(config(shards=2), output=cut, resume=True)
    assert same_run(in_process, cut)


def test_shards_are_their_own_stream(tmp_path, in_process):
    # the single-process loop learns while a round plays, with the learner's streams: another run, as documented
    single = langrl.train(config(), output=tmp_path / "single").run_dir
    assert rows(single) != rows(in_process)


@pytest.mark.parametrize(("distributed", "message"), [
    ({"shards": 4}, "invalid config: distributed.shards=4 is more than reply_dqn.parallel=3: each shard needs an "
                    "episode; lower distributed.shards or raise reply_dqn.parallel"),
    ({"learners": 2}, "invalid config: a reply_dqn run takes distributed.rollout_workers and shards; "
                      "distributed.learners and overlap apply to kind: lm runs"),
])
def test_bad_shard_settings_are_one_clear_line(distributed, message):
    with pytest.raises(ConfigError) as error:
        load_any_config(config(**distributed))
    assert message in str(error.value) and "\n" not in str(error.value)
