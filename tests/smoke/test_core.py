"""Tier 2-3: the core both directions share. A prompt task is a one-step text environment; every kind of
config goes through one `langrl.train` / `langrl.evaluate`; an LM-agent run stopped and resumed logs
what the uninterrupted run logs (its environments are checkpointed mid-episode)."""

from __future__ import annotations

import json
import shutil

import pytest
from gymnasium.utils.env_checker import check_env

import langrl
from langrl.config import AgentConfig, Config, load_any_config
from langrl.envs.prompts import PromptSet
from langrl.envs.text.core import PromptTask, action_names, make_env
from langrl.errors import ConfigError
from langrl.protocols import ChoicePolicy, RewardFn, ValueFunction


def length_reward(prompts, completions):
    return [float(len(c)) for c in completions]


def test_a_prompt_task_is_a_one_step_text_environment():
    task = PromptTask(PromptSet(texts=["Say hi.", "Say bye."], ids=[[1], [2]], per_step=1, seed=0), length_reward)
    env = task.env()
    check_env(env, skip_render_check=True)
    prompt, info = env.reset(seed=0, options={"index": 1})
    assert prompt == "Say bye." and info == {"index": 1}
    obs, reward, terminated, truncated, _ = env.step("bye!")
    assert (obs, reward, terminated, truncated) == ("Say bye.", 4.0, True, False)
    assert task.score(["Say hi."], ["hello"]) == [5.0]


def test_choice_environments_list_their_actions_and_bad_ids_are_config_errors():
    assert action_names(make_env("langrl/CartPole-Text-v0")) == ["push left", "push right"]
    with pytest.raises(ConfigError, match=r"env.id = 'langrl/Nope-v0'"):
        make_env("langrl/Nope-v0")


def test_one_loader_for_every_kind_of_config():
    lm = load_any_config({"model": "tiny", "prompts": {"items": ["a"]}, "reward": {"type": "vader"}})
    agent = load_any_config({"model": "tiny", "env": {"id": "langrl/CartPole-Text-v0"}})
    explicit = load_any_config({"kind": "agent", "model": "tiny"})
    assert isinstance(lm, Config) and lm.kind == "lm"
    assert isinstance(agent, AgentConfig) and isinstance(explicit, AgentConfig)
    with pytest.raises(ConfigError, match=r"kind = 'gam': unknown kind of run; allowed: lm, agent"):
        load_any_config({"kind": "gam"})
    with pytest.raises(ConfigError, match=r"optim.lrr: unknown field; did you mean 'lr'"):
        load_any_config({"kind": "agent", "optim": {"lrr": 1}})  # the shared sections, in either kind


def test_protocols_fit_the_implementations(tiny):
    from langrl.agents.lm_policy import LMPolicy
    from langrl.rewards import build_reward

    policy = LMPolicy(tiny, ["left", "right"], window=0)
    assert isinstance(policy, ChoicePolicy) and isinstance(policy.head, ValueFunction)
    assert isinstance(build_reward({"type": "vader"}), RewardFn)


def agent_config(**log):
    return {"kind": "agent", "model": "tiny", "seed": 3,
            "env": {"id": "langrl/CartPole-Text-v0", "num_envs": 2},
            "policy": {"window": 1}, "ppo": {"env_steps": 32, "n_steps": 4, "minibatch_size": 4, "epochs": 2},
            "optim": {"lr": 1e-3}, "eval": {"episodes": 2, "prior": False},
            "log": {"tensorboard": False, "checkpoint_every": 2, "keep_checkpoints": 3, "progress": False, **log}}


def rows_without_time(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_agent_run_resumed_mid_episode_equals_the_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    result = langrl.train(agent_config(), output=whole)  # 4 updates of 2 envs x 4 steps; checkpoints 0, 2, 4
    assert result.summary["env_steps"] == 32
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "step-4")  # as if the run died after update 3: resume from step 2
    langrl.train(agent_config(), output=cut, resume=True)
    expected, got = rows_without_time(whole), rows_without_time(cut)
    assert [r["step"] for r in got] == [1, 2, 3, 4] and got == expected
    # CartPole episodes outlast a 4-step rollout: the resumed run continued them, not fresh resets
    assert any(r.get("rollout/episodes", 0) == 0 for r in expected)


def test_evaluate_and_report_take_every_kind(tmp_path):
    run = tmp_path / "agent"
    langrl.train(agent_config(), output=run)
    out = langrl.evaluate(agent_config(), str(run), episodes=2)
    assert out["episodes"] == 2 and out["checkpoint"].endswith("step-4")
    from langrl.report import write_report

    assert "Agent run report" in write_report(run).read_text()
