"""Dialogue users, part 2: the help-desk user with a scripted goal and the LM user.

Help desk: the feedback rules (helped, satisfied, repeats, leaves) and their rewards, the fixed train/test split of
the shipped goals and the goal table itself. LM user (the in-process tiny model): replies are text of the
observation space, the prompt is the persona plus the conversation with roles swapped (checked by hand on a
2-turn conversation), seeded replies are reproducible, reward_fn decides reward and ending. Both pass Gymnasium's
check_env."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

from langrl.envs.dialogue import HELPDESK_ID, LM_USER_ID, register_dialogue_envs
from langrl.envs.dialogue.base import load_data, normalize
from langrl.envs.dialogue.helpdesk import (
    ANNOYED,
    GIVES_UP,
    HELPED,
    REFUSES,
    THANKS,
    TOO_LONG,
    HelpDesk,
    phrase_in,
    shipped_goals,
)
from langrl.envs.dialogue.lm_user import LMUser, swapped_messages, to_text_space
from langrl.envs.text.spaces import CHARSET
from langrl.errors import ConfigError

PRINTER = "printer-e3"  # required: [paper jam ...], [restart ...]; forbidden: buy a new printer, throw it away
WIFI = "wifi-drops"  # three groups: router restart, distance, driver/firmware


def help_desk(target: str = PRINTER, **kwargs) -> HelpDesk:
    env = HelpDesk(split="all", **kwargs)
    env.reset(seed=0, options={"target": target})
    return env


# --- help desk: the feedback rules -------------------------------------------------------------------------------


def test_a_reply_covering_a_required_group_helps_with_positive_reward():
    env = HelpDesk(split="all")
    opening, info = env.reset(seed=0, options={"target": PRINTER})
    assert opening == "My printer shows error E3 and won't print anything."
    assert info == {"turn": 0, "target": PRINTER, "success": False, "candidates": len(env.target_names),
                    "covered": 0, "remaining": 2}
    reply, reward, terminated, truncated, info = env.step("Please restart the printer.")
    goal = env.goal
    assert reply == HELPED + goal.followups[0]  # the paper-jam group (0) is still missing: its follow-up
    assert reward == pytest.approx(0.5 * 1 / 2) and not terminated and not truncated
    assert info["feedback"] == "helped" and (info["covered"], info["remaining"]) == (1, 1)
    assert not info["success"] and info["kind"] == "reply" and info["gain"] == 0.0


def test_covering_every_group_satisfies_the_user():
    env = help_desk()
    reply, reward, terminated, truncated, info = env.step("Clear the paper jam, then reboot it.")
    assert reply == env.goal.thanks and reward == pytest.approx(1.0)
    assert terminated and not truncated and info["success"] and info["feedback"] == "satisfied"
    assert (info["covered"], info["remaining"]) == (2, 0)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("Anything else?")


def test_progress_over_turns_then_success():
    env = help_desk(WIFI, success_reward=2.0, progress_reward=0.6)
    steps = [("Try to reboot the router.", "helped", 0.2),
             ("Move closer to it, or reduce interference.", "helped", 0.2),
             ("Restarting again won't help.", "repeats", -0.1),
             ("Update the firmware too.", "satisfied", 2.0)]
    for utterance, feedback, expected in steps:
        reply, reward, terminated, _, info = env.step(utterance)
        assert info["feedback"] == feedback and reward == pytest.approx(expected), (utterance, reply)
    assert terminated and info["success"] and info["turn"] == 4
    # the helped line names what is still wrong: the follow-up of the first missing group
    env = help_desk(WIFI)
    assert env.step("Update the driver.")[0] == HELPED + env.goal.followups[0]
    assert env.step("Reboot the router.")[0] == HELPED + env.goal.followups[1]


def test_useless_replies_repeat_the_problem_then_the_user_leaves_after_patience():
    env = help_desk()
    reply, reward, terminated, truncated, info = env.step("Hello! How are you today?")
    assert reply == ANNOYED[0] + env.goal.opening and reward == pytest.approx(-0.1)
    assert info["feedback"] == "repeats" and not terminated and not truncated and info["covered"] == 0
    reply, reward, terminated, truncated, info = env.step("Have you read the manual?")
    assert reply == GIVES_UP and reward == pytest.approx(-1.0) and info["feedback"] == "leaves"
    assert terminated and not truncated and not info["success"]


def test_annoyance_grows_with_patience_and_a_helpful_reply_resets_it():
    env = help_desk(patience=3, annoyance_cost=0.2, leave_penalty=2.0)
    first = env.step("Hmm.")
    second = env.step("Hmm, hmm.")
    assert (first[0], second[0]) == (ANNOYED[0] + env.goal.opening, ANNOYED[1] + env.goal.opening)
    assert first[1] == second[1] == pytest.approx(-0.2)
    assert env.step("Restart it.")[4]["feedback"] == "helped"  # the useless streak starts again
    reply, _, terminated, _, info = env.step("Restart it once more.")  # covers nothing new
    assert reply == ANNOYED[0] + env.goal.followups[0] and not terminated  # repeats what is still wrong
    env.step("Hmm.")
    reply, reward, terminated, _, info = env.step("Hmm.")
    assert reply == GIVES_UP and reward == pytest.approx(-2.0) and terminated and info["feedback"] == "leaves"


@pytest.mark.parametrize("utterance", [
    "Just buy a new printer.",  # the goal's own forbidden phrase
    "Restart it, clear the paper jam, or throw it away.",  # a forbidden phrase wins over covered groups
    "Not my problem, sorry.",  # the table's global forbidden phrases
    "Google it.",
])
def test_a_forbidden_phrase_makes_the_user_leave(utterance):
    env = help_desk()
    reply, reward, terminated, truncated, info = env.step(utterance)
    assert reply == REFUSES and reward == pytest.approx(-1.0) and terminated and not truncated
    assert info["feedback"] == "leaves" and not info["success"] and info["covered"] == 0


def test_phrases_match_whole_words_with_inflections():
    assert phrase_in(normalize("I restarted it"), ("restart",))
    assert phrase_in(normalize("Try rebooting."), ("reboot",))
    assert phrase_in(normalize("Update the drivers!"), ("update", "the", "driver"))
    assert phrase_in(normalize("It's updating"), ("update",))
    assert not phrase_in(normalize("It is a restartable job"), ("restart",))
    assert not phrase_in(normalize("the driver update"), ("update", "the", "driver"))
    env = help_desk()
    assert env.step("Have you tried rebooting?")[4]["feedback"] == "helped"


def test_a_long_reply_counts_as_useless_and_the_turn_limit_truncates():
    env = help_desk(max_words=10)
    stuffed = "restart reboot paper jam " * 5
    reply, reward, terminated, _, info = env.step(stuffed)
    assert reply == TOO_LONG + env.goal.opening and info["feedback"] == "repeats" and info["covered"] == 0
    env = help_desk(WIFI, max_turns=1)
    _, reward, terminated, truncated, info = env.step("Reboot the router.")
    assert info["feedback"] == "helped" and reward > 0 and truncated and not terminated and not info["success"]


def test_the_train_test_split_is_disjoint_and_fixed():
    every = [g.id for g in shipped_goals()]
    train, test = HelpDesk(split="train").target_names, HelpDesk(split="test").target_names
    assert test == [every[i] for i in range(4, len(every), 5)]  # every 5th goal is held out
    assert not set(train) & set(test) and sorted(train + test) == sorted(every)
    assert HelpDesk().target_names == train == HelpDesk(split="train").target_names  # train by default, fixed
    assert HelpDesk(split="all").target_names == every and len(test) == len(every) // 5
    env = HelpDesk(split="test")
    assert {env.reset(seed=s)[1]["target"] for s in range(30)} <= set(test)
    with pytest.raises(ConfigError, match="options"):
        HelpDesk(split="train").reset(options={"target": test[0]})


@pytest.mark.parametrize("kwargs, argument", [
    ({"split": "valid"}, "split = 'valid'"), ({"patience": 0}, "patience = 0"), ({"max_turns": 0}, "max_turns = 0"),
    ({"progress_reward": -1}, "progress_reward = -1"), ({"leave_penalty": float("inf")}, "leave_penalty = inf"),
    ({"max_words": 0}, "max_words = 0"), ({"goals": {"goals": []}}, "goals"),
    ({"goals": {"goals": [{"id": "a", "opening": "Hi.", "required": [["x"]]}]}, "split": "all"}, "followups"),
    ({"goals": {"goals": [{"id": "a", "opening": "Hi.", "required": [["x"]], "followups": ["a", "b"]}]},
      "split": "all"}, "goals.goals[0].followups"),
    ({"goals": {"goals": [{"id": "a", "opening": "Hi #1.", "required": [["x"]], "followups": ["a"]}]},
      "split": "all"}, "goals.goals[0].opening"),
])
def test_bad_arguments_are_one_line_config_errors(kwargs, argument):
    with pytest.raises(ConfigError) as error:
        HelpDesk(**kwargs)
    message = str(error.value)
    assert argument in message and "\n" not in message and "give" in message


def test_a_custom_goal_table_plugs_in():
    table = {"goals": [{"id": "kettle", "opening": "My kettle won't boil.", "required": [["descale"], ["fuse"]],
                        "followups": ["It is full of white stuff.", "Still dead at the wall."]}],
             "forbidden": ["not my problem"]}
    env = HelpDesk(split="all", goals=table)
    assert env.reset(seed=1)[0] == "My kettle won't boil."
    assert env.step("Descale it.")[0] == HELPED + "Still dead at the wall."
    assert env.step("Check the fuse.")[0] == THANKS
    with pytest.raises(ConfigError, match="split = 'test': no goals"):
        HelpDesk(split="test", goals=table)


# --- help desk: the shipped goals --------------------------------------------------------------------------------


def test_the_goal_table_is_complete_and_consistent():
    records = load_data("helpdesk_goals.json")["goals"]
    ids = [r["id"] for r in records]
    assert len(records) >= 40 and len(set(ids)) == len(ids)
    goals = shipped_goals()
    assert [g.id for g in goals] == ids
    for goal in goals:
        assert len(goal.required) >= 2 and len(goal.followups) == len(goal.required)
        for text in (goal.opening, *goal.followups, goal.thanks):
            assert set(text) <= set(CHARSET), (goal.id, text)
            words = normalize(text)
            # parroting the user gains nothing: the user's lines cover no group and hold no forbidden phrase
            assert not goal.covers(words) and not goal.forbids(words), (goal.id, text)
        for i, group in enumerate(goal.required):
            for phrase in group:  # each phrase covers its own group only and is never forbidden
                assert goal.covers(list(phrase)) == {i} and not goal.forbids(list(phrase)), (goal.id, phrase)
    for line in (HELPED, THANKS, TOO_LONG, GIVES_UP, REFUSES, *ANNOYED):
        assert set(line) <= set(CHARSET)


def test_every_goal_can_be_solved_one_group_at_a_time():
    env = HelpDesk(split="all")
    for name in env.target_names:
        env.reset(options={"target": name})
        groups = env.goal.required
        for i, group in enumerate(groups):
            _, reward, terminated, _, info = env.step(f"Please {' '.join(group[0])}.")
            last = i == len(groups) - 1
            assert info["feedback"] == ("satisfied" if last else "helped"), (name, i)
            assert terminated == last and reward > 0


# --- the LM user (in-process tiny model) -------------------------------------------------------------------------


@pytest.fixture
def lm_user(tiny):
    return LMUser(persona="You are Ana. Your printer is broken.", model=tiny, opening="Hi, my printer is broken.",
                  max_new_tokens=6)


def test_reset_and_step_return_text_of_the_observation_space(lm_user):
    opening, info = lm_user.reset(seed=0)
    assert opening == "Hi, my printer is broken." and info["target"] == lm_user.persona and info["turn"] == 0
    reply, reward, terminated, truncated, info = lm_user.step("Have you tried restarting it?")
    assert isinstance(reply, str) and lm_user.observation_space.contains(reply)
    assert reward == 0.0 and not terminated and not truncated and info["kind"] == "reply" and info["turn"] == 1
    assert lm_user.history == [{"role": "user", "content": opening},
                               {"role": "assistant", "content": "Have you tried restarting it?"},
                               {"role": "user", "content": reply}]
    generated = LMUser(model=lm_user.lm, max_new_tokens=6)  # no opening given: the LM writes it
    text, _ = generated.reset(seed=0)
    assert generated.observation_space.contains(text) and generated.history == [{"role": "user", "content": text}]


def test_the_prompt_is_the_chat_template_with_swapped_roles(lm_user, monkeypatch):
    lm_user.reset(seed=0)
    seen = []
    build = lm_user.prompt_ids

    def spy(history):
        seen.append(list(history))
        return build(history)

    monkeypatch.setattr(lm_user, "prompt_ids", spy)
    first = lm_user.step("Did you restart it?")[0]
    lm_user.step("Is there paper stuck inside?")
    history = [{"role": "user", "content": "Hi, my printer is broken."},
               {"role": "assistant", "content": "Did you restart it?"},
               {"role": "user", "content": first},
               {"role": "assistant", "content": "Is there paper stuck inside?"}]
    assert seen[-1] == history
    expected = ("<|bos|>system: You are Ana. Your printer is broken.\n"
                "<|bos|>assistant: Hi, my printer is broken.\n"  # the LM user's own turns are "assistant"
                "<|bos|>user: Did you restart it?\n"  # the agent's turns are "user" turns to the LM
                f"<|bos|>assistant: {first}\n"
                "<|bos|>user: Is there paper stuck inside?\n"
                "<|bos|>assistant: ")  # the generation prompt: the LM user speaks next
    assert lm_user.prompt_text(history) == expected
    assert build(history) == lm_user.lm.tokenizer(expected)["input_ids"]
    assert swapped_messages("P", history[:2]) == [{"role": "system", "content": "P"},
                                                  {"role": "assistant", "content": history[0]["content"]},
                                                  {"role": "user", "content": "Did you restart it?"}]


def test_a_long_conversation_drops_its_oldest_turns(tiny):
    env = LMUser(persona="P", model=tiny, opening="Hello.", max_prompt_tokens=50, max_new_tokens=2)
    env.reset(seed=0)
    history = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "x" * 40},
               {"role": "user", "content": "ok"}, {"role": "assistant", "content": "Last question?"}]
    ids = env.prompt_ids(history)
    assert len(ids) <= 50  # the oldest turns went first; the persona stays
    assert env.prompt_text(history) == "<|bos|>system: P\n<|bos|>user: Last question?\n<|bos|>assistant: "


def test_seeded_replies_are_reproducible(tiny):
    def episode(seed: int) -> list[str]:
        env = LMUser(persona="You need help with e-mail.", model=tiny, max_new_tokens=6, temperature=1.0)
        text, _ = env.reset(seed=seed)
        return [text] + [env.step(u)[0] for u in ("What is wrong?", "Try again.")]

    assert episode(3) == episode(3)
    assert len({tuple(episode(s)) for s in (3, 4, 5)}) > 1  # the seed, not a fixed stream, drives sampling
    greedy = LMUser(persona="P", model=tiny, opening="Hi.", max_new_tokens=6, temperature=0)
    greedy.reset(seed=1)
    first = greedy.step("Hello?")[0]
    greedy.reset(seed=2)
    assert greedy.step("Hello?")[0] == first  # temperature 0 is greedy: no randomness at all


def test_reward_fn_decides_reward_and_the_end(tiny):
    def solved(history):
        said = history[-2]["content"]  # the agent's last utterance; history[-1] is the user's reply
        return (1.0, True, True) if "fixed" in said else (-0.1, False, False)

    env = LMUser(persona="P", model=tiny, tokenizer=None, opening="Help!", reward_fn=solved, max_new_tokens=3)
    env.reset(seed=0)
    assert env.step("Let me look.")[1:4] == (-0.1, False, False)
    _, reward, terminated, truncated, info = env.step("It is fixed now.")
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    plain = LMUser(persona="P", model=tiny.model, tokenizer=tiny.tokenizer, opening="Help!", max_turns=2,
                   max_new_tokens=3)  # a transformers model and tokenizer plug in too
    plain.reset(seed=0)
    results = [plain.step("Hm?") for _ in range(2)]
    assert [r[1:4] for r in results] == [(0.0, False, False), (0.0, False, True)]  # 0 per turn, truncated
    def not_a_tuple(history):
        return 1.0

    bad = LMUser(persona="P", model=tiny, opening="Help!", reward_fn=not_a_tuple, max_new_tokens=2)
    bad.reset(seed=0)
    with pytest.raises(ConfigError, match="reward_fn returned 1.0"):
        bad.step("Hi")


@pytest.mark.parametrize("kwargs, argument", [
    ({"persona": ""}, "persona = ''"), ({"persona": []}, "persona = []"),
    ({"max_new_tokens": 0}, "max_new_tokens = 0"), ({"temperature": -1}, "temperature = -1"),
    ({"top_p": 2.0}, "top_p = 2.0"), ({"opening": 3}, "opening = 3"), ({"reward_fn": "yes"}, "reward_fn = 'yes'"),
])
def test_lm_user_bad_arguments_are_one_line_config_errors(tiny, kwargs, argument):
    with pytest.raises(ConfigError) as error:
        LMUser(**{"model": tiny, **kwargs})
    message = str(error.value)
    assert argument in message and "\n" not in message and "give" in message


def test_model_objects_need_a_tokenizer(tiny):
    with pytest.raises(ConfigError, match="needs its tokenizer"):
        LMUser(model=tiny.model)


def test_replies_are_made_valid_observations():
    assert to_text_space("Caf\u00e9 \u201cok\u201d\tit\u2019s \U0001f600 fine\r") == "Cafe \"ok\" it's  fine"
    assert to_text_space("a" * 5000) == "a" * 4096


# --- Gymnasium ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id, kwargs", [
    (HELPDESK_ID, {}), (HELPDESK_ID, {"split": "test"}),
    (LM_USER_ID, {"persona": "You are a customer with a slow laptop.", "model": "tiny", "max_new_tokens": 4,
                  "opening": "My laptop is slow."}),
])
def test_check_env_passes(env_id, kwargs, recwarn):
    assert env_id in register_dialogue_envs()
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped)
    assert not [w for w in recwarn.list if "gymnasium" in str(w.filename)], [str(w.message) for w in recwarn]
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and {"turn", "target", "success", "candidates"} <= set(info)
    reply, *_ = env.step("Have you tried turning it off and on again?")
    assert env.observation_space.contains(reply)
    assert gym.make(env_id, **kwargs, max_turns=5).get_wrapper_attr("max_turns") == 5



@pytest.mark.parametrize("split", ["train", "test"])
def test_the_expert_satisfies_every_user_one_step_per_turn(split):
    """The scripted expert names one missing step a turn, in a phrasing of its group: every shipped user is
    satisfied in as many turns as the goal has groups, each turn but the last a "helped"."""
    env = HelpDesk(split=split)
    for seed in range(3 * len(env.goals)):
        message, _ = env.reset(seed=seed)
        expert, turns, done, info = env.expert_policy(), 0, False, {}
        while not done:
            text = expert(message)
            assert text.startswith("Here is what to do: ") and len(text.split()) <= 12
            message, reward, done, truncated, info = env.step(text)
            turns += 1
            assert reward > 0 and not truncated
        assert info["success"] and turns == len(env.goal.required)
