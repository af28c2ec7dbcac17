"""Multi-turn RL: turns rendered as the chat template renders the whole conversation, the environment mask
(user tokens are context, never trained on), and a tiny-model run end to end."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import langrl
from langrl.config import load_any_config
from langrl.lm.algorithms import build_algorithm
from langrl.lm.trainer import make_batch
from langrl.models import Reference
from langrl.rollout import SamplingConfig
from langrl.rollout.dialogue import Conversation, TurnRenderer, as_rollout, step


class ScriptedUser:
    """A two-turn environment that answers every utterance with the same reply."""

    def __init__(self, reply: str = "No, try again.", turns: int = 2):
        self.reply, self.turns, self.turn = reply, turns, 0

    def reset(self, seed=None, options=None):
        self.turn = 0
        return "Guess my number.", {}

    def step(self, text):
        self.turn += 1
        done = self.turn >= self.turns
        return self.reply, 1.0 if done else 0.0, False, done, {"success": False}


def play(renderer: TurnRenderer, utterances: list[str], reply: str = "No, try again.") -> Conversation:
    """A conversation whose policy turns are ``utterances`` tokenised as the tokenizer would, plus EOS."""
    tokenizer = renderer.tokenizer
    env = ScriptedUser(reply, len(utterances))
    opening, _ = env.reset()
    c = Conversation(opening=renderer.opening(opening), messages=[{"role": "user", "content": opening}])
    for text in utterances:
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        step(c, env, renderer, tokens, [-1.0] * len(tokens), text, 4096, 8)
    return c


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from langrl.models import load_lm

    return load_lm("smollm2-135m-instruct").tokenizer


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_turns_concatenate_to_the_chat_template_of_the_whole_conversation(smollm2_tokenizer, pad_is_eos):
    tokenizer = smollm2_tokenizer
    if pad_is_eos:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    renderer = TurnRenderer(tokenizer, system="You ask short questions.")
    c = play(renderer, ["Is it seven?", "Is it eight?"])
    messages = [{"role": "system", "content": "You ask short questions."}, *c.messages]
    whole = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    # the template ends an assistant turn with EOS and a newline; the episode ended right after the EOS
    assert c.context == list(whole)[:len(c.context)] and len(whole) - len(c.context) <= 1
    # every EOS the policy sampled is its own token (masked in), also when pad == eos
    rollout = as_rollout([c], tokenizer.pad_token_id, torch.device("cpu"))
    eos_positions = (rollout.completion_ids[0] == tokenizer.eos_token_id) & (rollout.completion_mask[0] == 1)
    assert int(eos_positions.sum()) == 2


def test_plain_format_without_a_chat_template(tiny):
    renderer = TurnRenderer(tiny.tokenizer, chat=False)
    c = play(renderer, ["abc", "de"], reply="no")
    text = tiny.tokenizer.decode(c.context, skip_special_tokens=True)
    assert text == "User: Guess my number.\nAssistant:abc\nUser: no\nAssistant:de"


def test_a_template_without_eos_keeps_the_sampled_eos(tiny):
    """The tiny model's template ends a turn with a newline, not EOS: the EOS the policy sampled stays in the
    context (the model saw it), and the rest is the template's rendering of the whole conversation."""
    renderer = TurnRenderer(tiny.tokenizer)
    c = play(renderer, ["abc", "de"], reply="no")
    whole = tiny.tokenizer.apply_chat_template(c.messages, tokenize=True, return_dict=True)["input_ids"]
    eos = tiny.tokenizer.eos_token_id
    assert c.context.count(eos) == 2
    assert [t for t in c.context if t != eos] == list(whole)[:len(c.context) - 2]


def test_user_tokens_are_context_never_trained_on(tiny, lm_config, monkeypatch):
    """The loss has no gradient through the log-probs of user tokens, and their KL is 0. Fails if
    ``as_rollout`` masks the user's tokens in (the perturbation below then changes the loss)."""
    renderer = TurnRenderer(tiny.tokenizer)
    conversations = [play(renderer, ["ab", "cd"]), play(renderer, ["efg", "h"], reply="yes, more")]
    rollout = as_rollout(conversations, tiny.tokenizer.pad_token_id, torch.device("cpu"))
    user = (rollout.context_mask == 1) & (rollout.completion_mask == 0)
    assert user.any() and rollout.attention_mask[:, -user.size(1):][user].eq(1).all()

    config = load_any_config(lm_config(algorithm="rloo", sampling__group_size=2, kl__estimator="k1"))
    reference = Reference(tiny.model, use_adapter=False)
    batch = make_batch(tiny.model, reference, rollout, [1.0, 0.0], "k1", SamplingConfig(group_size=2))
    assert batch.kl_tokens[user].eq(0).all()

    captured = []
    import langrl.lm.policy_gradient as pg

    real = pg.completion_logits

    def keep(*args, **kwargs):
        logits = real(*args, **kwargs)
        logits.retain_grad()
        captured.append(logits)
        return logits

    monkeypatch.setattr(pg, "completion_logits", keep)
    algorithm = build_algorithm(config, tiny.model, None)
    advantages = torch.tensor([1.0, -1.0])
    loss, _ = algorithm.loss(tiny.model, batch, advantages)
    loss.backward()
    grad = captured[0].grad.abs().sum(-1)  # (B, Tc) gradient reaching each position's logits
    assert grad[user].eq(0).all() and grad[rollout.completion_mask.bool()].gt(0).any()

    batch.old_logprobs = torch.where(user, torch.randn_like(batch.old_logprobs), batch.old_logprobs)
    again, _ = algorithm.loss(tiny.model, batch, advantages)
    assert torch.equal(loss.detach(), again.detach())


def test_dialogue_run_on_twenty_questions(tmp_path):
    config = {"kind": "dialogue", "model": "tiny", "steps": 2, "episodes_per_step": 2,
              "env": {"id": "langrl/TwentyQuestions-v0", "kwargs": {"num_objects": 4, "max_turns": 3}},
              "sampling": {"max_new_tokens": 6, "group_size": 2}, "optim": {"lr": 1e-3}, "eval": {"episodes": 2},
              "log": {"progress": False, "tensorboard": False, "checkpoint_every": 1}}
    result = langrl.train(config, output=tmp_path / "run")
    assert math.isfinite(result.metrics["loss/policy"]) and result.metrics["episode/turns"] == 3
    assert set(result.summary) >= {"before", "after", "headline"}
    assert "## Episodes" in (result.run_dir / "report.md").read_text()
    stopped = tmp_path / "stopped"
    langrl.train({**config, "steps": 1}, output=stopped)
    resumed = langrl.train(config, output=stopped, resume=True, allow_config_change=True)
    assert resumed.metrics["reward/mean"] == result.metrics["reward/mean"]
    evaluation = langrl.evaluate(config, model=str(result.run_dir), episodes=2)
    assert evaluation["episodes"] == 2 and 0 <= evaluation["success_rate"] <= 1
    assert math.isfinite(evaluation["kl_ref"]) and evaluation["kl_ref"] != 0  # the trained policy moved
    assert langrl.evaluate(config, model="tiny", episodes=1)["kl_ref"] == 0.0


def test_episode_kl_counts_the_policy_tokens_only(tiny):
    """Against itself the KL of every episode is 0 up to float error: the user's tokens (log-prob 0 in the
    conversation, not 0 under the reference) are left out; against another model it is not."""
    import gymnasium as gym

    from langrl.lm.dialogue import episode_kls
    from langrl.rollout.dialogue import run_conversations

    envs = [gym.make("langrl/TwentyQuestions-v0", num_objects=4, max_turns=2) for _ in range(2)]
    sampling = SamplingConfig(max_new_tokens=5)
    model = tiny.model.eval()
    conversations = run_conversations(model, TurnRenderer(tiny.tokenizer), envs, [0, 1], [None, None], sampling,
                                      torch.Generator().manual_seed(0))
    assert all(0 in c.policy_mask for c in conversations)  # user turns are in the episodes
    pad = tiny.tokenizer.pad_token_id
    same = episode_kls(model, Reference(model, use_adapter=False), conversations, sampling, pad, batch=1)
    assert same == pytest.approx([0.0, 0.0], abs=1e-4)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(3.0)
    moved = episode_kls(model, Reference(other, use_adapter=False), conversations, sampling, pad, batch=2)
    assert all(math.isfinite(k) and abs(k) > 1e-3 for k in moved)
