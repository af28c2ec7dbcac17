"""The user-feedback log (`langrl.agents.reply_feedback`): every candidate scored by a copy of the user, the
conversation continued with the chosen one, rows that a ``kind: offline`` run reads back as they were rendered."""

from __future__ import annotations

import json
from collections.abc import Sequence

import gymnasium as gym
import pytest
import torch

import langrl
from langrl.agents.reply_dqn import Candidate, ReplyLM
from langrl.agents.reply_feedback import collect, expert_rows, log_feedback, main
from langrl.config import load_any_config
from langrl.lm.offline_data import encode_prompts
from langrl.rollout import SamplingConfig
from langrl.rollout.dialogue import TurnRenderer

# Two steps to satisfy the user: "restart" and "cable".
GOALS = {"goals": [{"id": "stuck", "opening": "My screen is black.", "required": [["restart"], ["cable"]],
                    "followups": ["Still black after that.", "Still black."]}]}
REPLIES = ["I like turtles.", "Please restart it.", "Restart it and check the cable."]


class ScriptedLM(ReplyLM):
    """The same K replies every turn (as tokens of the tiny tokenizer), so the user's verdicts are known."""

    def candidates(self, contexts: Sequence[list[int]], generator: torch.Generator) -> list[list[Candidate]]:
        tok = self.tokenizer
        tokens = [[*tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id] for t in REPLIES]
        return [[Candidate(ids, [0.0] * len(ids), t) for ids, t in zip(tokens, REPLIES, strict=True)]
                for _ in contexts]


@pytest.fixture(autouse=True)
def keep_threads():
    """The runs here set one torch thread; restore the count after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def scripted(tiny) -> ScriptedLM:
    return ScriptedLM(tiny.model, tiny.tokenizer, TurnRenderer(tiny.tokenizer), SamplingConfig(max_new_tokens=8),
                      len(REPLIES))


def helpdesk() -> gym.Env:
    return gym.make("langrl/HelpDesk-v0", goals=GOALS, split="all", max_turns=3)


def test_best_reply_is_sent_and_every_candidate_is_scored(tiny):
    rows, conversations = log_feedback(scripted(tiny), [helpdesk()], [0], torch.Generator(), send="best")
    assert [(r["completion"], r["reward"], r["feedback"], r["sent"]) for r in rows] == [
        (REPLIES[0], -0.1, "repeats", False), (REPLIES[1], 0.25, "helped", False),
        (REPLIES[2], 1.0, "satisfied", True)]
    assert all(r["turn"] == 0 and r["episode"] == 0 and r["goal"] == "stuck" and r["eos"] for r in rows)
    c = conversations[0]
    assert c.done and c.info["success"] and c.rewards == [1.0]  # scoring copies left the user untouched


def test_first_reply_goes_on_and_the_next_turns_prompt_is_the_rendered_context(tiny):
    lm = scripted(tiny)
    rows, conversations = log_feedback(lm, [helpdesk()], [0], torch.Generator(), send="first")
    assert [r["turn"] for r in rows] == [0, 0, 0, 1, 1, 1]
    assert [r["reward"] for r in rows[3:]] == [-1.0, 0.25, 1.0]  # patience 2: a second useless reply, it leaves
    assert [r["sent"] for r in rows] == [True, False, False, True, False, False]
    c = conversations[0]
    assert c.rewards == [-0.1, -1.0] and not c.info["success"]
    second = rows[3]["prompt"]
    assert "Sorry, that doesn't help." in second and REPLIES[0] in second
    # the rendered prompt reads back as the very tokens the LM saw (what dataset.rendered trains on)
    context = c.opening + c.ids[:c.ids.index(tiny.tokenizer.eos_token_id) + 1]
    context += lm.renderer.user_turn(c.messages[2]["content"], ended_with_eos=True)
    assert encode_prompts([second], tiny.tokenizer, chat=True, rendered=True) == [context]


def test_the_log_trains_filtered_bc_on_the_rewarded_replies(tmp_path):
    """The command writes the rows; an offline run with dataset.rendered and min_reward 0 clones the rewarded."""
    dialogue = {"kind": "dialogue", "model": "tiny", "seed": 0, "threads": 1,
                "env": {"id": "langrl/HelpDesk-v0", "kwargs": {"goals": GOALS, "split": "all", "max_turns": 2}},
                "sampling": {"max_new_tokens": 4}}
    rows = collect(load_any_config(dialogue), episodes=3, candidates=2, batch=2)
    assert {r["episode"] for r in rows} == {0, 1, 2} and all(isinstance(r["reward"], float) for r in rows)
    config_file = tmp_path / "dialogue.yaml"
    config_file.write_text(json.dumps(dialogue))
    main([str(config_file), str(tmp_path / "log.jsonl"), "--episodes", "3", "--candidates", "2", "--batch", "2"])
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == rows  # seeded: the command writes what collect returns
    logged[0]["reward"] = 0.5  # the tiny model's replies never help: mark one as rewarded
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))
    offline = {"kind": "offline", "model": "tiny", "algorithm": "filtered_bc", "steps": 2, "threads": 1,
               "dataset": {"path": str(tmp_path / "log.jsonl"), "rendered": True},
               "filtered_bc": {"fraction": 1.0, "min_reward": 0.0}, "train": {"batch_size": 2},
               "log": {"progress": False, "tensorboard": False, "checkpoint_every": 2}}
    result = langrl.train(offline, output=tmp_path / "bc")
    assert result.metrics["loss/total"] > 0


def test_expert_rows_are_the_expert_replies_in_their_rendered_context(tiny):
    """--expert: one row per expert reply, its prompt the conversation before it as the renderer writes it."""
    dialogue = {"kind": "dialogue", "model": "tiny", "seed": 0, "threads": 1,
                "env": {"id": "langrl/HelpDesk-v0", "kwargs": {"goals": GOALS, "split": "all", "max_turns": 3}}}
    rows = expert_rows(load_any_config(dialogue), episodes=2)
    assert [(r["episode"], r["turn"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["reward"] for r in rows] == [0.25, 1.0, 0.25, 1.0] and all(r["sent"] and r["eos"] for r in rows)
    renderer = TurnRenderer(tiny.tokenizer)
    first, second = rows[0], rows[1]
    assert first["prompt"] == renderer.render([{"role": "user", "content": "My screen is black."}], True)
    assert first["completion"].startswith("Here is what to do: ") and first["completion"] in second["prompt"]
    assert second["prompt"].endswith(renderer.render([{"role": "user", "content": "x"}], True).split("x")[-1])
    assert "Still black." in second["prompt"]


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="--episodes = 0: must be at least 1"):
        main(["configs/helpdesk.yaml", str(tmp_path / "x.jsonl"), "--episodes", "0"])
