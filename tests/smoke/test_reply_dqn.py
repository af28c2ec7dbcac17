"""Reply selection with DQN (``kind: reply_dqn``): candidate features in context, the Q-network over K candidates,
TD targets by hand, a toy user whose one right reply is learned, a tiny run with resume, one-line config errors."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import langrl
from langrl.agents import reply_dqn
from langrl.agents.encoder import pool_hidden
from langrl.agents.reply_dqn import (
    Candidate,
    Greedy,
    ReplyLM,
    ReplyQNetwork,
    UserOracle,
    encode_turn,
    sample_candidates,
    td_targets,
)
from langrl.config import KINDS, load_any_config
from langrl.errors import ConfigError
from langrl.rollout import SamplingConfig
from langrl.rollout.dialogue import TurnRenderer
from langrl.run.callbacks import Callback

# A help-desk table with one goal: the user is satisfied by a reply that says "restart".
GOALS = {"goals": [{"id": "stuck", "opening": "My computer is frozen.", "required": [["restart"]],
                    "followups": ["It is still frozen."]}]}
REPLIES = ["Please restart it.", "Have a nice day!", "I like turtles.", "What is the weather?"]


@pytest.fixture(autouse=True)
def keep_threads():
    """Runs here set one torch thread (tiny matrices: more threads only contend); restore the count after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_run_config(**reply: object) -> dict:
    """A reply_dqn run of the tiny model on the one-goal help desk."""
    return {"kind": "reply_dqn", "model": "tiny", "seed": 0, "threads": 1,
            "env": {"id": "langrl/HelpDesk-v0", "kwargs": {"goals": GOALS, "split": "all", "max_turns": 3}},
            "sampling": {"max_new_tokens": 4},
            "reply_dqn": {"candidates": 3, "episodes": 6, "parallel": 2, "learning_starts": 2, "batch_size": 4,
                          "hidden": [16], **reply},
            "eval": {"episodes": 2}, "log": {"progress": False, "report_to": [], "checkpoint_every": 1}}


def test_candidate_features_equal_one_pass_over_context_and_candidate(tiny):
    """History and candidate features from the shared-prefill path equal pooling the hidden states of one plain
    pass over context + candidate (right-padded), for contexts of different lengths."""
    tok, model = tiny.tokenizer, tiny.model.eval()
    contexts = [tok("hello there")["input_ids"], tok("hi")["input_ids"]]
    generator = torch.Generator().manual_seed(0)
    candidates = sample_candidates(model, tok, contexts, SamplingConfig(max_new_tokens=5), 3, generator)
    assert [len(c) for c in candidates] == [3, 3]
    states = encode_turn(model, contexts, candidates, tok.pad_token_id)
    dim = model.config.hidden_size
    assert states.shape == (2, 4 * dim) and states.dtype == torch.float32
    for p, context in enumerate(contexts):
        for j, cand in enumerate(candidates[p]):
            ids = torch.tensor([context + cand.tokens])
            with torch.no_grad():
                hidden = model.base_model(input_ids=ids).last_hidden_state
            mask = torch.zeros(ids.shape, dtype=torch.long)
            mask[0, len(context):] = 1
            expected = pool_hidden(hidden, mask, "mean")[0]
            torch.testing.assert_close(states[p, (j + 1) * dim:(j + 2) * dim], expected, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(states[p, :dim], hidden[0, :len(context)].mean(0), atol=1e-5, rtol=1e-4)


def test_q_network_scores_k_candidates_and_greedy_picks_the_argmax():
    torch.manual_seed(0)
    dim, k = 6, 4
    q = ReplyQNetwork(dim, k, [16])
    states = torch.randn(5, (k + 1) * dim)
    q.observe(states)
    values = q(states)
    assert values.shape == (5, k)
    assert Greedy(q).choose(list(range(5)), states, []) == values.argmax(-1).tolist()
    # one MLP shared by the candidates: permuting them permutes their values
    order = torch.tensor([2, 0, 3, 1])
    h, c = q.split(states)
    permuted = torch.cat([h, c[:, order].flatten(1)], dim=1)
    torch.testing.assert_close(q(permuted), values[:, order])


class Fixed(nn.Module):
    """A 'network' whose Q-values are given."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.values = values

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.values


def test_td_target_by_hand_terminal_and_not():
    rewards, done, gamma = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0]), 0.9
    target = Fixed(torch.tensor([[0.2, 0.7, -1.0], [5.0, 5.0, 5.0]]))
    online = Fixed(torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    next_states = torch.zeros(2, 4)
    y = td_targets(online, target, rewards, next_states, done, gamma)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 0.7, 0.5]))
    y_double = td_targets(online, target, rewards, next_states, done, gamma, double_q=True)
    torch.testing.assert_close(y_double, torch.tensor([1.0 + 0.9 * 0.2, 0.5]))


def fixed_candidates(self: ReplyLM, contexts: list[list[int]], generator: torch.Generator) -> list[list[Candidate]]:
    """K candidates per context: the first K of REPLIES in a random order (the right one anywhere)."""
    out = []
    for _ in contexts:
        order = torch.randperm(self.k, generator=generator).tolist()
        texts = [REPLIES[i] for i in order]
        out.append([Candidate(self.tokenizer(t)["input_ids"] + [self.tokenizer.eos_token_id], [0.0], t)
                    for t in texts])
    return out


def test_the_one_right_reply_is_learned(tmp_path, monkeypatch):
    """One of K = 3 candidates (in a random position) satisfies the user: the greedy Q-selector finds it in >= 90%
    of held-out episodes; the first candidate (a random one of the three, two tries before the user leaves) in
    about 1 - (2/3)^2 = 56%."""
    monkeypatch.setattr(reply_dqn.ReplyLM, "candidates", fixed_candidates)
    config = tiny_run_config(episodes=48, parallel=8, learning_starts=8, batch_size=16, gradient_steps=4, lr=3e-3,
                             target_update_every=10, exploration_fraction=0.5, hidden=[32])
    config["eval"] = {"episodes": 30, "batch": 15, "user_oracle": True}
    config["log"]["checkpoint_every"] = 100
    result = langrl.train(config, output=tmp_path / "run")
    summary = result.summary
    assert summary["q_selector"]["success_rate"] >= 0.9
    assert summary["first_candidate"]["success_rate"] < 0.7
    assert summary["user_oracle"]["success_rate"] == 1.0 and summary["user_oracle"]["turns"] == 1.0
    assert summary["kl_bound_per_turn"] == pytest.approx(math.log(3) - 2 / 3)


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step: int, metrics: dict[str, float]) -> bool:
        return step >= self.step


def rows(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


def test_tiny_run_resumes_as_the_uninterrupted_run(tmp_path):
    config = tiny_run_config()
    whole = langrl.train(config, output=tmp_path / "whole")
    assert len(rows(whole.run_dir)) == 3 and math.isfinite(whole.metrics["loss/td"])
    assert set(whole.summary) >= {"first_candidate", "q_selector", "kl_bound_per_turn", "headline"}
    assert "## Reply selection" in (whole.run_dir / "report.md").read_text()
    stopped = langrl.train(config, output=tmp_path / "resumed", callbacks=[StopAt(1)])
    assert len(rows(stopped.run_dir)) == 1
    resumed = langrl.train(config, output=tmp_path / "resumed", resume=True)
    assert rows(resumed.run_dir) == rows(whole.run_dir)
    assert resumed.summary["q_selector"] == whole.summary["q_selector"]
    evaluation = langrl.evaluate(config, model=str(whole.run_dir), episodes=2)
    assert evaluation["q_selector"] == whole.summary["q_selector"]
    assert evaluation["first_candidate"] == whole.summary["first_candidate"]


def test_smoke_overrides_validate_on_the_shipped_config():
    cfg = load_any_config("configs/helpdesk_dqn.yaml", list(KINDS["reply_dqn"].smoke))
    assert cfg.kind == "reply_dqn" and cfg.reply_dqn.episodes == 4


@pytest.mark.parametrize(("overrides", "expected"), [
    (["reply_dqn.batch_size=64", "reply_dqn.buffer_size=32"],
     "reply_dqn.batch_size = 64 > reply_dqn.buffer_size = 32: the buffer cannot hold one batch; raise "
     "reply_dqn.buffer_size or lower reply_dqn.batch_size"),
    (["reply_dqn.candidates=1"], "reply_dqn.candidates = 1: Input should be greater than or equal to 2"),
    (["reply_dqn.candidate=4"], "reply_dqn.candidate: unknown field; did you mean 'candidates'?"),
    (["reply_dqn.exploration_final_eps=0.9", "reply_dqn.exploration_initial_eps=0.5"],
     "reply_dqn.exploration_final_eps = 0.9 > reply_dqn.exploration_initial_eps = 0.5"),
])
def test_config_errors_are_one_line_naming_field_value_and_fix(overrides, expected):
    with pytest.raises(ConfigError) as e:
        load_any_config("configs/helpdesk_dqn.yaml", overrides)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_evaluating_something_that_is_not_a_run_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="not a reply_dqn run folder or checkpoint .*pass the run's output folder"):
        langrl.evaluate(tiny_run_config(), model=str(tmp_path), episodes=1)


def test_user_oracle_picks_what_the_user_rewards_and_leaves_the_conversation_alone():
    """The oracle steps copies of the environment: it picks the satisfying reply (the first of equals otherwise),
    and the real conversation is where it was (the same reply still satisfies it, on its first turn)."""
    env = gym.make("langrl/HelpDesk-v0", goals=GOALS, split="all", max_turns=3)
    env.reset(seed=0)
    oracle = UserOracle([env])
    assert oracle.choose([0], torch.zeros(1, 4), [["I like turtles.", "Please restart it.", "Restart!"]]) == [1]
    assert oracle.choose([0], torch.zeros(1, 4), [["I like turtles.", "Have a nice day!"]]) == [0]
    _, reward, terminated, _, info = env.step("Please restart it.")
    assert terminated and info["success"] and info["turn"] == 1


def test_epsilon_greedy_completes_transitions_a_turn_later(tiny):
    """A transition enters the buffer when its next state is known, or at once when the episode ended there."""
    learner = reply_dqn.ReplyDQN(4, reply_dqn.ReplySettings(candidates=2, hidden=(8,), learning_starts=100))
    selector = reply_dqn.EpsilonGreedy(learner, 0.0, np.random.default_rng(0))
    states = torch.randn(2, 12)
    selector.choose([0, 1], states, [])
    selector.record([0, 1], [0.5, 1.0], [False, True])
    assert learner.transitions == 1 and float(learner.buffer.terminated[0]) == 1.0
    later = torch.randn(1, 12)
    selector.choose([0], later, [])
    assert learner.transitions == 2
    np.testing.assert_allclose(learner.buffer.next_obs[1], later[0].numpy())
    assert float(learner.buffer.rewards[1]) == 0.5 and float(learner.buffer.terminated[1]) == 0.0


def test_renderer_and_reply_lm_shapes(tiny):
    lm = ReplyLM(tiny.model, tiny.tokenizer, TurnRenderer(tiny.tokenizer), SamplingConfig(max_new_tokens=3), 2)
    contexts = [lm.renderer.opening("hello")]
    candidates = lm.candidates(contexts, torch.Generator().manual_seed(1))
    assert lm.states(contexts, candidates).shape == (1, 3 * lm.hidden_size)
