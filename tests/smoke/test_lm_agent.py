"""The LM as an agent's policy (GLAM): batched action scoring, GAE over env steps, PPO, cloning, CLI."""

import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("minigrid")

from langrl.agents.episodes import bot_episodes  # noqa: E402
from langrl.agents.imitation import bc_eval_loss, behaviour_cloning, demo_views, lm_demonstrations  # noqa: E402
from langrl.agents.lm_agent import evaluate_agent, train_agent  # noqa: E402
from langrl.agents.lm_policy import LMPolicy  # noqa: E402
from langrl.agents.prior import LMActionPrior, action_logprobs  # noqa: E402
from langrl.agents.scoring import score_actions  # noqa: E402
from langrl.cli import main  # noqa: E402
from langrl.config import config_kind, read_config_data  # noqa: E402
from langrl.config.agent import load_agent_config  # noqa: E402
from langrl.envs.text import BABYAI_ACTIONS  # noqa: E402
from langrl.envs.text.core import make_env  # noqa: E402
from langrl.envs.text.history import EpisodeWindow, render_history  # noqa: E402
from langrl.envs.text.spaces import text_space  # noqa: E402
from langrl.errors import ConfigError  # noqa: E402
from langrl.rollout.episodes import run_episodes, summarise_episodes  # noqa: E402

BABYAI = "langrl/BabyAI-GoToLocal-Text-v0"
PICK = "langrl-test/Pick-v0"


class PickEnv(gym.Env):
    """One-step episodes: the observation asks for "b"; action 1 ("b") earns 1, action 0 ("a") 0."""

    observation_space = text_space(64)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "Goal: say b.", {"actions": ["a", "b"]}

    def step(self, action):
        return "Goal: say b.", float(action == 1), True, False, {"actions": ["a", "b"]}


if PICK not in gym.registry:
    gym.register(PICK, entry_point=PickEnv)


def slow_scores(model, prompt, actions):
    """One full forward per (prompt, action): the reference for the batched scoring."""
    out = []
    for a in actions:
        logp = model(torch.tensor([list(prompt) + list(a)])).logits[0].log_softmax(-1)
        out.append(sum(float(logp[len(prompt) - 1 + k, tok].detach()) for k, tok in enumerate(a)))
    return torch.tensor(out)


def ids(tokenizer, texts, special=True):
    return [tokenizer(t, add_special_tokens=special)["input_ids"] for t in texts]


# ---------------------------------------------------------------------------------------------- scoring

def test_scoring_equals_one_forward_per_action(tiny):
    prompt = ids(tiny.tokenizer, ["Goal: go to the red ball.\nYour next action:"])
    actions = ids(tiny.tokenizer, [" turn left", " go forward", " x"], special=False)  # lengths 10, 11, 2
    got = score_actions(tiny.model, prompt, actions, tiny.tokenizer.pad_token_id).scores[0]
    torch.testing.assert_close(got, slow_scores(tiny.model, prompt[0], actions), atol=1e-4, rtol=0)
    prior = action_logprobs(tiny.model, prompt[0], actions, tiny.tokenizer.pad_token_id)  # the B = 1 case
    torch.testing.assert_close(got, prior, atol=1e-4, rtol=0)


def test_batched_scoring_across_envs_equals_per_env_scoring(tiny):
    prompts = ids(tiny.tokenizer, ["Goal: open the door.\nYou see a wall 1 step left.\nNext:", "Hi:",
                                   "Goal: pick up the key. You carry nothing.\nNext:"])
    actions = ids(tiny.tokenizer, [" " + a for a in BABYAI_ACTIONS], special=False)
    batched = score_actions(tiny.model, prompts, actions, tiny.tokenizer.pad_token_id)
    assert batched.scores.shape == (3, 6) and batched.hidden.shape == (3, tiny.model.config.hidden_size)
    for b, prompt in enumerate(prompts):
        alone = score_actions(tiny.model, [prompt], actions, tiny.tokenizer.pad_token_id)
        torch.testing.assert_close(batched.scores[b], alone.scores[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(batched.hidden[b], alone.hidden[0], atol=1e-4, rtol=0)
        slow = slow_scores(tiny.model, prompt, actions)
        torch.testing.assert_close(batched.scores[b], slow, atol=1e-4, rtol=0)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_shared_prompt_prefix_runs_once_and_changes_nothing(tiny, share_prefix):
    """Prompts that start alike (the chat header and the instructions) share one pass over that part;
    scores, hidden states and gradients equal the unshared computation and the slow reference."""
    policy = LMPolicy(tiny, ["a", "go on"], window=0)
    prompts = policy.prompt_ids(["Goal: go to the red ball.\nYou see a key.", "Goal: go to the red box.",
                                 "Goal: open it."])
    calls = []
    hook = tiny.model.model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape),
                                                      with_kwargs=True)
    got = score_actions(tiny.model, prompts, policy.prior.action_ids, 0, share_prefix=share_prefix)
    hook.remove()
    rows = [shape[0] for shape in calls]
    assert rows == ([1, 3, 6] if share_prefix else [3, 6])  # shared part, own parts, continuations
    got.scores.sum().backward()
    grads = [p.grad.clone() for p in tiny.model.parameters()]
    tiny.model.zero_grad()
    ref = score_actions(tiny.model, prompts, policy.prior.action_ids, 0, share_prefix=False)
    ref.scores.sum().backward()
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.hidden, ref.hidden, atol=1e-4, rtol=0)
    for g, r in zip(grads, (p.grad for p in tiny.model.parameters()), strict=True):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    for b, prompt in enumerate(prompts):
        slow = slow_scores(tiny.model, prompt, policy.prior.action_ids)
        torch.testing.assert_close(got.scores[b].detach(), slow, atol=1e-4, rtol=0)


def test_untrained_policy_is_the_zero_shot_prior(tiny):
    policy = LMPolicy(tiny, BABYAI_ACTIONS, window=0)
    obs = ["Goal: go to the red ball.\nYou see a red ball 2 steps forward.", "Goal: pick up a key."]
    logits, values = policy(policy.prompt_ids(obs))
    prior = LMActionPrior(tiny, BABYAI_ACTIONS)
    np.testing.assert_allclose(logits.softmax(-1).detach().numpy(), prior.probs(obs), atol=1e-5)
    assert torch.all(values == 0)  # zero-initialised value head


def test_history_window_renders_the_goal_once():
    text = render_history([("Goal: g.\nYou see a key.", "turn left")], "Goal: g.\nYou see a box.")
    assert text == "Goal: g.\nObservation: You see a key.\nAction: turn left\nObservation: You see a box."
    assert render_history([], "Goal: g.\nX") == "Goal: g.\nX"
    window = EpisodeWindow(2, size=1)
    window.push(["Goal: g.\nA", "Goal: h.\nB"], ["drop", "toggle"], [False, True])
    window.push(["Goal: g.\nC", "Goal: h.\nD"], ["pick up", "drop"], [False, False])
    assert window.texts(["Goal: g.\nE", "Goal: h.\nF"]) == [
        "Goal: g.\nObservation: C\nAction: pick up\nObservation: E",
        "Goal: h.\nObservation: D\nAction: drop\nObservation: F"]


# ---------------------------------------------------------------------------------------------- imitation

def test_behaviour_cloning_reduces_the_loss_on_bot_demonstrations(tiny):
    def make():
        return make_env(BABYAI)

    episodes = bot_episodes(make, range(2))
    assert episodes and all(e.success for e in episodes)
    policy = LMPolicy(tiny, BABYAI_ACTIONS, window=0)
    views, targets = demo_views(episodes, policy.actions, policy.window)
    assert len(views) == sum(len(e.actions) for e in episodes)
    before = bc_eval_loss(policy, views, targets)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    losses = behaviour_cloning(policy, views, targets, optimizer, epochs=6, batch_size=8,
                               generator=torch.Generator().manual_seed(0))
    assert len(losses) == 6 and np.isfinite(losses).all()
    assert bc_eval_loss(policy, views, targets) < 0.5 * before


def test_lm_demonstrations_keep_only_successful_episodes(tiny):
    policy = LMPolicy(tiny, ["a", "b"], window=0)
    kept = lm_demonstrations(policy, lambda: make_env(PICK), range(12), greedy=False,
                             generator=torch.Generator().manual_seed(0), parallel=4)
    played = run_episodes(policy.chooser(False, torch.Generator().manual_seed(0)), lambda: make_env(PICK),
                          range(12), policy.actions, parallel=4)
    assert [e.seed for e in kept] == [e.seed for e in played if e.success]
    assert all(e.success and e.actions == [1] for e in kept)
    assert summarise_episodes(played)["success_rate"] == len(kept) / 12


# ---------------------------------------------------------------------------------------------- PPO

def pick_config(**overrides):
    cfg = {"model": "tiny", "env": {"id": PICK, "num_envs": 4}, "policy": {"window": 0},
           "ppo": {"env_steps": 16 * 12, "n_steps": 4, "epochs": 2, "minibatch_size": 8, "entropy_coef": 0.0},
           "optim": {"lr": 3e-3}, "eval": {"episodes": 16, "parallel": 8},
           "log": {"tensorboard": False, "checkpoint_every": 100}}
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def test_ppo_learns_to_pick_the_rewarded_action(tmp_path):
    import langrl

    result = langrl.train(pick_config(), output=tmp_path / "run")  # an 'env' section routes to train_agent
    phases = result.summary["phases"]
    assert phases["prior"]["success_rate"] < 0.8
    assert phases["eval"]["success_rate"] == 1.0 and phases["eval"]["env_steps"] == 16 * 12
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ppo_rows = [r for r in rows if r["step"] > 0]
    assert [r["env/steps"] for r in ppo_rows] == [16 * k for k in range(1, 13)]
    assert ppo_rows[-1]["rollout/success_rate"] > ppo_rows[0]["rollout/success_rate"]


def test_cloning_from_a_prompted_lm_proposer_through_the_trainer(tmp_path):
    cfg = pick_config(imitation={"source": "lm", "episodes": 8, "epochs": 2, "proposer_greedy": False,
                                 "proposer_template": "Say b. Actions: {actions}.\n{observation}\nAnswer:"},
                      ppo={"env_steps": 16}, eval={"episodes": 4, "prior": False},
                      policy={"freeze": ["embed_tokens"]})
    result = train_agent(cfg, output=tmp_path / "run")
    from langrl.models import load_lm

    trained = load_lm(str(tmp_path / "run" / "checkpoints" / "step-1")).model
    initial = load_lm("tiny").model
    assert torch.equal(trained.model.embed_tokens.weight, initial.model.embed_tokens.weight)
    up = [m.model.layers[0].mlp.up_proj.weight for m in (trained, initial)]
    assert not torch.equal(*up)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    demo = next(r for r in rows if "bc/demos" in r)
    assert 0 < demo["bc/demos"] <= 8 and demo["bc/samples"] == demo["bc/demos"]  # one-step episodes
    assert demo["bc/loss_after"] < demo["bc/loss_before"]
    assert "cloned" in result.summary["phases"]


def test_ppo_smoke_on_babyai_with_bot_cloning_kl_lora_and_resume(tmp_path, tiny):
    cfg = {"model": "tiny", "env": {"id": BABYAI, "num_envs": 2, "max_episode_steps": 5},
           "policy": {"window": 1}, "imitation": {"source": "bot", "episodes": 2, "epochs": 1},
           "ppo": {"env_steps": 12, "n_steps": 2, "minibatch_size": 4, "epochs": 1},
           "kl": {"coef": 0.1}, "lora": {"r": 4}, "optim": {"lr": 1e-2},
           "eval": {"episodes": 1, "prior": False}, "log": {"tensorboard": False, "checkpoint_every": 1}}
    run = tmp_path / "run"
    train_agent(cfg, output=run, overrides=["ppo.env_steps=8"])
    resumed = train_agent(cfg, output=run, resume=True)  # updates 3 (continues from the step-2 checkpoint)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["step"] > 0] == [1, 2, 3]
    assert [r["env/steps"] for r in rows if r["step"] > 0] == [4, 8, 12]
    assert all(np.isfinite(v) for r in rows for v in r.values() if v is not None)
    assert "kl/ref" in rows[-1] and "loss/kl" in rows[-1] and rows[-1]["time/env_step_s"] > 0
    assert any("bc/loss_before" in r for r in rows) and "cloned" in resumed.summary["phases"]
    adapter = (run / "checkpoints" / "step-3" / "adapter_model.safetensors")
    assert adapter.exists() and (run / "checkpoints" / "step-3" / "value_head.safetensors").exists()
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(str(adapter)).items() if "lora_B" in k]
    assert any(float(v.abs().max()) > 0 for v in lora_b)  # LoRA B starts at zero: the update moved it
    assert (run / "report.md").exists() and "after behaviour cloning" in (run / "report.md").read_text()


def test_full_finetune_changes_parameters_and_cli_eval_prints_json(tmp_path, capsys):
    from langrl.models import load_lm

    config = tmp_path / "pick.yaml"
    config.write_text(json.dumps(pick_config(ppo={"env_steps": 16}, eval={"episodes": 4, "prior": False})))
    assert config_kind(read_config_data(config)[0]) == "agent"
    assert main(["train", str(config), "--output", str(tmp_path / "run")]) == 0
    trained = load_lm(str(tmp_path / "run" / "checkpoints" / "step-1"))
    initial = load_lm("tiny")
    pairs = zip(trained.model.named_parameters(), initial.model.parameters(), strict=True)
    changed = [n for (n, p), q in pairs if not torch.equal(p, q)]
    assert changed
    capsys.readouterr()
    assert main(["eval", str(config), "--model", str(tmp_path / "run"), "--episodes", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 3 and 0 <= out["success_rate"] <= 1 and "mean_return" in out
    assert out["checkpoint"].endswith("step-1") and out["seeds"] == [1_000_000, 1_000_002]
    assert main(["report", str(tmp_path / "run")]) == 0
    assert evaluate_agent(config, "tiny", episodes=2)["episodes"] == 2


def test_agent_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"ppo\.clip: unknown field; did you mean 'clip_eps'"):
        load_agent_config({"env": {}}, ["ppo.clip=0.1"])
    with pytest.raises(ConfigError, match=r"imitation\.source = 'bott'.*'bot'"):
        load_agent_config({"env": {}}, ["imitation.source=bott"])
    with pytest.raises(ConfigError, match=r"policy\.template must contain \{observation\}"):
        load_agent_config({"env": {}}, ["policy.template=hello {actions}"])
    assert config_kind({"prompts": {"items": ["a"]}, "reward": {"type": "vader"}}) == "lm"
    assert config_kind({"env": {}}) == "agent" and config_kind({"kind": "agent"}) == "agent"
    with pytest.raises(ConfigError, match=r"kind = 'agnet': unknown kind of run; allowed: lm, agent"):
        config_kind({"kind": "agnet"})


def test_shipped_config_is_an_agent_config():
    from pathlib import Path

    path = Path(__file__).parents[2] / "configs" / "babyai_goto.yaml"
    assert config_kind(read_config_data(path)[0]) == "agent"
    cfg = load_agent_config(path)
    assert cfg.imitation.source == "bot" and cfg.env.id == BABYAI and cfg.updates >= 1


USER_CACHE = os.environ.get("LANGRL_CACHE")  # read before the autouse fixture isolates the cache


@pytest.mark.slow
def test_embedded_model_runs_the_shipped_config_end_to_end(tmp_path, monkeypatch):
    """The real pipeline on SmolLM2-135M, a handful of steps: bot cloning, one PPO update, evaluation."""
    if USER_CACHE:  # reuse the converted model rather than converting it again (~25 s)
        monkeypatch.setenv("LANGRL_CACHE", USER_CACHE)
    else:
        monkeypatch.delenv("LANGRL_CACHE")
    overrides = ["env.num_envs=1", "env.max_episode_steps=4", "policy.window=0", "imitation.episodes=1",
                 "imitation.seed_start=100001", "imitation.epochs=1", "ppo.n_steps=2", "ppo.env_steps=2",
                 "ppo.epochs=1", "ppo.minibatch_size=2", "eval.episodes=1", "eval.prior=false",
                 "log.tensorboard=false"]
    result = train_agent("configs/babyai_goto.yaml", output=tmp_path / "run", overrides=overrides)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    demo = next(r for r in rows if "bc/demos" in r)
    assert demo["bc/samples"] == 4 and demo["bc/loss_after"] < demo["bc/loss_before"]
    assert set(result.summary["phases"]) == {"cloned", "eval"} and rows[-1]["env/steps"] == 2
    assert rows[-1]["time/env_step_s"] > 0 and np.isfinite(rows[-1]["loss/value"])
