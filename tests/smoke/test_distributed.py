"""Rollout shards and Ray rollout workers: the layout of workers never changes what a run computes.

Every test marked ``ray`` is in the default run; `make test` runs them in one process after the xdist
workers are done, so one local Ray runs at a time.

Every run here uses one torch thread (``threads: 1``; the workers take the run's threads), since CPU
kernels may round differently with more threads.
"""

import math

import pytest
import torch

import langrl
from langrl.distributed.shards import join_prefix_rewards, join_rollouts, shard_indices
from langrl.errors import ConfigError
from langrl.rollout import TokenRollout
from langrl.run.callbacks import Callback
from langrl.run.io import read_jsonl

SKIP = ("time/", "samples/per_s", "rollout/")


def test_shards_cover_the_prompts_in_order():
    assert shard_indices([5, 6, 7, 8, 9], 2) == [[5, 6, 7], [8, 9]]
    assert shard_indices([1], 3) == [[1], [], []]
    assert shard_indices([1, 2, 3, 4], 1) == [[1, 2, 3, 4]]


def rollout(prompt, completion, prefix_last):
    n = len(completion)
    return TokenRollout(
        prompt_ids=torch.tensor([prompt]), prompt_mask=torch.ones(1, len(prompt), dtype=torch.long),
        completion_ids=torch.tensor([completion]), completion_mask=torch.ones(1, n, dtype=torch.long),
        logprobs=torch.full((1, n), -0.5)), torch.full((1, n), prefix_last)


def test_joined_shards_pad_prompts_left_and_completions_right():
    a, pa = rollout([1, 2, 3], [4], 0.25)
    b, pb = rollout([5], [6, 7, 8], 0.5)
    joined = join_rollouts([a, b], pad_token_id=0)
    assert joined.prompt_ids.tolist() == [[1, 2, 3], [0, 0, 5]]
    assert joined.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert joined.completion_ids.tolist() == [[4, 0, 0], [6, 7, 8]]
    assert joined.completion_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert joined.logprobs.tolist() == [[-0.5, 0, 0], [-0.5, -0.5, -0.5]]
    # past its end a completion has earned all it will: the last entry repeats
    assert join_prefix_rewards([pa, pb]).tolist() == [[0.25, 0.25, 0.25], [0.5, 0.5, 0.5]]


def test_sharded_run_in_one_process_is_deterministic(tmp_path, lm_config, single_grpo):
    again = langrl.train(config(lm_config, distributed={"shards": 2}), output=tmp_path / "again").run_dir
    assert same_run(single_grpo, again)


def config(lm_config, **extra):
    return lm_config(threads=1, **extra)


@pytest.fixture(scope="module")
def single_grpo(tmp_path_factory):
    """The single-process run every GRPO layout below must reproduce: 2 shards, 1 thread."""
    from conftest import tiny_lm_config

    out = tmp_path_factory.mktemp("single") / "run"
    return langrl.train(config(tiny_lm_config, distributed={"shards": 2}), output=out).run_dir


def run_files(run_dir):
    metrics = [{k: v for k, v in row.items() if not k.startswith(SKIP)}
               for row in read_jsonl(run_dir / "metrics.jsonl")]
    samples = read_jsonl(run_dir / "samples.jsonl", missing_ok=True)  # agent runs write none
    from safetensors.torch import load_file

    final = sorted((run_dir / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))[-1]
    weights = {p.name: load_file(str(p)) for p in final.glob("*.safetensors")}
    return metrics, samples, weights


def same_run(a, b):
    (ma, sa, wa), (mb, sb, wb) = run_files(a), run_files(b)
    assert ma == mb
    assert sa == sb
    assert wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].keys() == wb[name].keys()
        for key in wa[name]:
            assert torch.equal(wa[name][key], wb[name][key]), (name, key)
    return True


@pytest.mark.ray
def test_two_ppo_workers_reproduce_the_single_process_run(tmp_path, lm_config, ray_cluster):
    single = langrl.train(config(lm_config, algorithm="ppo", distributed={"shards": 2}),
                          output=tmp_path / "single").run_dir
    two = langrl.train(config(lm_config, algorithm="ppo", distributed={"rollout_workers": 2}),
                       output=tmp_path / "two").run_dir
    assert same_run(single, two)



@pytest.mark.ray
def test_two_workers_one_killed_reproduce_the_single_process_run(tmp_path, lm_config, single_grpo, kill_worker):
    survived = langrl.train(config(lm_config, distributed={"rollout_workers": 2}), output=tmp_path / "killed",
                            callbacks=[kill_worker(1)]).run_dir
    assert same_run(single_grpo, survived)


@pytest.mark.ray
def test_stale_batches_are_rejected_or_kept_within_the_bound(tmp_path, lm_config, ray_cluster, single_grpo):
    # overlap samples step s + 1 before step s updates: one update stale, over a bound of 0 -> sampled again;
    # one worker holding both shards gives the single-process run
    strict = langrl.train(config(lm_config, distributed={"rollout_workers": 1, "shards": 2, "overlap": True}),
                          output=tmp_path / "strict").run_dir
    rows = read_jsonl(strict / "metrics.jsonl")
    assert [r["rollout/rejected"] for r in rows] == [0, 1, 1]
    assert all(r["rollout/staleness"] == 0 for r in rows)
    assert same_run(single_grpo, strict)
    loose = langrl.train(config(lm_config, distributed={"rollout_workers": 1, "overlap": True,
                                                          "max_staleness": 1}), output=tmp_path / "loose")
    rows = read_jsonl(loose.run_dir / "metrics.jsonl")
    assert [r["rollout/staleness"] for r in rows] == [0, 1, 1]
    assert [r["rollout/rejected"] for r in rows] == [0, 0, 0]
    assert all(math.isfinite(r["loss/policy"]) for r in rows)


@pytest.mark.ray
def test_a_sync_that_cannot_finish_fails_within_its_timeout(tmp_path, lm_config, ray_cluster):
    from langrl.distributed.pool import DistributedError

    with pytest.raises(DistributedError, match=r"distributed\.timeout_s=0\.001 s"):
        langrl.train(config(lm_config, distributed={"rollout_workers": 1, "timeout_s": 0.001}),
                     output=tmp_path / "run")


@pytest.mark.ray
def test_more_workers_than_the_cluster_holds_is_a_config_error(tmp_path, lm_config, ray_cluster):
    with pytest.raises(ConfigError, match="rollout_workers=3 ask for 3 CPUs, the Ray cluster has 2"):
        langrl.train(config(lm_config, distributed={"rollout_workers": 3}), output=tmp_path / "run")


def test_ppo_learners_need_a_row_mean_loss(lm_config):
    with pytest.raises(ConfigError, match="train.loss_aggregation = 'token_mean'"):
        langrl.load_config(config(lm_config, algorithm="ppo", distributed={"learners": 2},
                                  train={"loss_aggregation": "token_mean"}))


def test_overlap_needs_workers(tmp_path, lm_config):
    with pytest.raises(ConfigError, match="distributed.overlap"):
        langrl.train(lm_config(distributed={"overlap": True}), output=tmp_path / "run")


def close_runs(a, b, tol=1e-5):
    """Two runs equal up to float rounding: same samples, metrics and weights within ``tol``."""
    (ma, sa, wa), (mb, sb, wb) = run_files(a), run_files(b)
    assert [r["completion"] for r in sa] == [r["completion"] for r in sb]
    for ra, rb in zip(ma, mb, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=tol, abs=tol), key
    for name in wa:
        for key in wa[name]:
            torch.testing.assert_close(wa[name][key], wb[name][key], rtol=tol, atol=tol)
    return True


@pytest.mark.ray
@pytest.mark.parametrize("algorithm", ["a2c", "ppo"])
def test_two_learners_take_the_single_learners_steps(tmp_path, lm_config, ray_cluster, algorithm):
    # 2 prompts x 3 completions in micro-batches of 3. A2C (one step per batch): each learner computes one
    # micro-batch's gradients. PPO (one step per minibatch, 2 epochs): each computes every other row of each
    # minibatch. The value head's gradients are summed too.
    ppo = algorithm == "ppo"  # minibatches of 2 rows: one each, so the logged losses average alike too
    common = {"algorithm": algorithm, "steps": 2, "train": {"micro_batch_size": 2 if ppo else 3, "epochs": 1 + ppo}}
    single = langrl.train(config(lm_config, distributed={"shards": 2}, **common), output=tmp_path / "one")
    two = langrl.train(config(lm_config, distributed={"learners": 2}, **common), output=tmp_path / "two")
    assert two.metrics["grad/norm"] == pytest.approx(single.metrics["grad/norm"], rel=1e-5)
    assert close_runs(single.run_dir, two.run_dir)
    assert (two.run_dir / "report.md").exists()


class StopAfter(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, metrics):
        return step == self.step


def babyai_config(**distributed):
    pytest.importorskip("minigrid")
    return {"model": "tiny", "threads": 1, "env": {"id": "langrl/BabyAI-GoToLocal-Text-v0", "num_envs": 4,
                                                   "max_episode_steps": 5},
            "policy": {"window": 1}, "ppo": {"env_steps": 24, "n_steps": 2, "minibatch_size": 4, "epochs": 1},
            "kl": {"coef": 0.1}, "lora": {"r": 4}, "optim": {"lr": 1e-2},
            "eval": {"episodes": 1, "prior": False}, "distributed": distributed,
            "log": {"tensorboard": False, "checkpoint_every": 1}}


@pytest.fixture(scope="module")
def single_agent(tmp_path_factory):
    """The single-process agent run with 2 environment shards."""
    return langrl.train(babyai_config(shards=2), output=tmp_path_factory.mktemp("agent") / "run").run_dir


def test_agent_shards_resume_as_the_uninterrupted_run(tmp_path, single_agent):
    whole = single_agent
    cut = tmp_path / "cut"
    langrl.train(babyai_config(shards=2), output=cut, callbacks=[StopAfter(2)])  # updates 1-2 of 3, checkpointed
    langrl.train(babyai_config(shards=2), output=cut, resume=True)
    strip = [{k: v for k, v in r.items() if not k.startswith(SKIP)} for r in read_jsonl(whole / "metrics.jsonl")]
    assert [{k: v for k, v in r.items() if not k.startswith(SKIP)} for r in read_jsonl(cut / "metrics.jsonl")] \
        == strip


@pytest.mark.ray
def test_agent_with_two_workers_reproduces_the_single_process_run(tmp_path, ray_cluster, single_agent):
    two = langrl.train(babyai_config(rollout_workers=2), output=tmp_path / "two").run_dir
    rows = read_jsonl(two / "metrics.jsonl")
    assert [r["env/steps"] for r in rows if r["step"] > 0] == [8, 16, 24]
    assert same_run(single_agent, two)
