"""Dialogue environments with rule-based simulated users: Twenty Questions and Guess My City (LMRL-Gym style).

The oracle's reading of questions, rewards, the exact information gain, the turn limit, the shipped data, Gymnasium
compliance, and the greedy questioner against the information-theoretic bound ceil(log2 N)."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import langrl
from langrl.envs.dialogue import (
    GUESS_MY_CITY_ID,
    HELPDESK_ID,
    LM_USER_ID,
    TWENTY_QUESTIONS_ID,
    register_dialogue_envs,
)
from langrl.envs.dialogue.base import load_data, normalize
from langrl.envs.dialogue.guess_my_city import FIELDS, GuessMyCity, answer_about, open_answer, shipped_answerer
from langrl.envs.dialogue.twenty_questions import (
    NEGATED,
    PHRASES,
    QUESTIONS,
    TwentyQuestions,
    greedy_mean_questions,
    greedy_questions,
    knowledge_base,
    optimal_questioner,
    parse_question,
    shipped_oracle,
)
from langrl.envs.text.spaces import CHARSET
from langrl.errors import ConfigError

NEW_IDS = [HELPDESK_ID, LM_USER_ID, "langrl/ToyDialogue-v0"]  # tested in test_helpdesk_lm_user.py and below

# --- Twenty Questions: the oracle's rules ------------------------------------------------------------------------


@pytest.mark.parametrize("question, literals", [
    ("Is it alive?", [("living", True)]),
    ("Is it a living thing?", [("living", True)]),
    ("Is it inanimate?", [("living", False)]),
    ("Is it an animal?", [("animal", True)]),
    ("Is it a creature?", [("animal", True)]),
    ("Can you eat it?", [("food", True)]),
    ("Is it edible?", [("food", True)]),
    ("Is it a kind of food?", [("food", True)]),
    ("Is it bigger than a breadbox?", [("bigger_than_a_breadbox", True)]),
    ("Is it large?", [("bigger_than_a_breadbox", True)]),
    ("Is it big?", [("bigger_than_a_breadbox", True)]),
    ("Is it small?", [("bigger_than_a_breadbox", False)]),
    ("Is it bigger than a car?", [("bigger_than_a_breadbox", True)]),  # an object name in a question is skipped
    ("Is it found in the living room?", [("found_indoors", True)]),  # "living room" is not "living"
    ("Does it eat meat?", [("carnivore", True)]),  # not "eat" -> food
    ("Do people wear clothes?", [("clothing", True)]),  # not "cloth" -> fabric
    ("Is it made of wood?", [("made_of_wood", True)]),
    ("Is it wooden?", [("made_of_wood", True)]),
    ("Does it have four legs?", [("has_legs", True)]),
    ("Does it live in the ocean?", [("lives_in_water", True)]),
    ("Is it an animal that can fly?", [("animal", True), ("can_fly", True)]),
])
def test_phrasings_map_to_the_right_attribute(question, literals):
    parsed = parse_question(question)
    assert parsed.kind == "attribute" and list(parsed.literals) == literals and parsed.mode == "all"


def test_or_makes_a_disjunction_and_every_canonical_question_asks_its_own_attribute():
    either = parse_question("Is it a mammal or a bird?")
    assert either.mode == "any" and either.literals == (("mammal", True), ("bird", True))
    kb = knowledge_base()
    assert set(QUESTIONS) == set(kb.attributes) == set(PHRASES) == set(kb.descriptions)
    for attribute, question in QUESTIONS.items():
        assert parse_question(question).literals == ((attribute, True),), question


@pytest.mark.parametrize("question, name", [
    ("Is it a cat?", "cat"), ("Is it an apple?", "apple"), ("cat?", "cat"), ("My guess is the piano", "piano"),
    ("I think it's bread.", "bread"), ("Is it an orange?", "orange"), ("Is it a kitten?", "cat"),
    ("Could the answer be a cat?", "cat"), ("So is it a T-shirt then?", "shirt"), ("Are they dogs?", "dog"),
])
def test_guesses_are_recognised_by_name_alias_or_plural(question, name):
    parsed = parse_question(question)
    assert (parsed.kind, parsed.guess) == ("guess", name)


@pytest.mark.parametrize("question", ["What is the meaning of life?", "Is it orange?", "Hello", "", "?!"])
def test_unclear_questions_are_answered_i_cant_answer_that(question):
    assert parse_question(question).kind == "unclear"
    env = TwentyQuestions()
    _, info = env.reset(options={"target": "cat"})
    reply, reward, terminated, truncated, info = env.step(question)
    assert reply == "I can't answer that." and info["kind"] == "unclear"
    assert info["candidates"] == len(env.target_names) and info["gain"] == 0.0
    assert reward == pytest.approx(-0.05) and not terminated and not truncated and info["turn"] == 1


def test_a_correct_guess_ends_the_episode_with_success():
    env = TwentyQuestions(success_reward=2.0, question_cost=0.1)
    opening, info = env.reset(seed=0, options={"target": "apple"})
    assert "object" in opening and info == {"turn": 0, "target": "apple", "success": False,
                                            "candidates": len(env.target_names)}
    reply, reward, terminated, truncated, info = env.step("Is it an apple?")
    assert reply == "Yes! It is an apple." and reward == pytest.approx(2.0 - 0.1)
    assert terminated and not truncated and info["success"] and info["candidates"] == 1 and info["kind"] == "guess"
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("Is it an apple?")
    env.reset(options={"target": "bread"})
    assert env.step("Is it bread?")[0] == "Yes! It is bread."


def test_a_wrong_guess_rules_the_object_out():
    env = TwentyQuestions()
    _, info = env.reset(options={"target": "cat"})
    total = info["candidates"]
    reply, reward, terminated, _, info = env.step("Is it a dog?")
    assert reply == "No." and not terminated and not info["success"] and info["candidates"] == total - 1
    assert info["gain"] == pytest.approx(math.log2(total / (total - 1))) and reward == pytest.approx(-0.05)
    assert env.step("Is it a dog?")[4]["candidates"] == total - 1  # already ruled out: no information
    reply, _, terminated, _, info = env.step("Does it bark, like a puppy?")  # names one object, asks nothing else
    assert reply == "No." and info["kind"] == "guess" and info["candidates"] == total - 1


def test_information_gain_is_log2_of_the_candidate_ratio_on_four_objects():
    # dog: animal, big; cat: animal, small; apple: food, small; car: vehicle, big.
    env = TwentyQuestions(num_objects=["dog", "cat", "apple", "car"], shaping=1.0)
    _, info = env.reset(options={"target": "cat"})
    assert info["candidates"] == 4 and env.target_names == ["dog", "cat", "apple", "car"]
    steps = [  # (question, reply, candidates after, gain in bits by hand)
        ("Can you eat it?", "No.", 3, math.log2(4 / 3)),  # apple out
        ("Is it an animal?", "Yes.", 2, math.log2(3 / 2)),  # car out
        ("Is it red?", "No.", 2, 0.0),  # splits nothing that is left
        ("Is it bigger than a breadbox?", "No.", 1, 1.0),  # dog out
        ("Is it a cat?", "Yes! It is a cat.", 1, 0.0),
    ]
    for question, expected, after, bits in steps:
        reply, reward, terminated, _, info = env.step(question)
        assert (reply, info["candidates"]) == (expected, after)
        assert info["gain"] == pytest.approx(bits)
        assert reward == pytest.approx(1.0 * terminated - 0.05 + 1.0 * bits)
    assert terminated and info["success"]
    assert sum(b for *_, b in steps) == pytest.approx(2.0)  # log2(4): the episode reveals the whole answer


def test_the_turn_limit_truncates():
    env = TwentyQuestions(max_turns=3)
    env.reset(seed=1)
    results = [env.step("Is it an animal?") for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True] and not any(r[2] for r in results)
    assert results[-1][4]["turn"] == 3 and not results[-1][4]["success"]
    assert "3 turns" in env.reset(seed=1)[0]


def test_a_guess_on_the_last_turn_terminates_rather_than_truncates():
    env = TwentyQuestions(max_turns=1)
    env.reset(options={"target": "dog"})
    _, _, terminated, truncated, info = env.step("Is it a dog?")
    assert terminated and not truncated and info["success"]


def test_curriculum_subsets_are_fixed_by_the_order_seed():
    first = TwentyQuestions(num_objects=10).target_names
    assert first == TwentyQuestions(num_objects=10).target_names and len(set(first)) == 10
    assert first != TwentyQuestions(num_objects=10, order_seed=1).target_names
    assert TwentyQuestions(num_objects=20).target_names[:10] == first
    env = TwentyQuestions(num_objects=10)
    assert {env.reset(seed=s)[1]["target"] for s in range(40)} <= set(first)
    with pytest.raises(ConfigError, match="options"):
        env.reset(options={"target": next(o.name for o in knowledge_base().objects if o.name not in first)})


@pytest.mark.parametrize("kwargs, argument", [
    ({"max_turns": 0}, "max_turns = 0"), ({"max_turns": 2.5}, "max_turns = 2.5"),
    ({"question_cost": -1}, "question_cost = -1"), ({"shaping": float("nan")}, "shaping = nan"),
    ({"success_reward": "1"}, "success_reward = '1'"), ({"num_objects": 0}, "num_objects = 0"),
    ({"num_objects": 1000}, "num_objects = 1000"), ({"num_objects": ["cat", "unicorn"]}, "'unicorn'"),
    ({"num_objects": ["cat", "kitten"]}, "listed twice"), ({"num_objects": "cat"}, "num_objects = 'cat'"),
    ({"order_seed": -1}, "order_seed = -1"),
])
def test_bad_arguments_are_one_line_config_errors(kwargs, argument):
    with pytest.raises(ConfigError) as error:
        TwentyQuestions(**kwargs)
    message = str(error.value)
    assert argument in message and "\n" not in message and ("give" in message or "list" in message)


# --- the shipped data --------------------------------------------------------------------------------------------


def test_the_object_list_is_complete_and_objects_are_distinguishable():
    data = load_data("twenty_questions.json")
    objects, attributes = data["objects"], list(data["attributes"])
    names = [o["name"] for o in objects]
    assert len(objects) >= 100 and len(set(names)) == len(names) and 15 <= len(attributes)
    for o in objects:
        assert list(o["attributes"]) == attributes and all(isinstance(v, bool) for v in o["attributes"].values())
    vectors = {tuple(o["attributes"].values()) for o in objects}
    assert len(vectors) == len(objects)  # no two objects answer every question alike
    for a in attributes:  # every attribute splits the objects
        assert 0 < sum(o["attributes"][a] for o in objects) < len(objects)


def test_object_names_never_collide_with_attribute_phrases():
    oracle = shipped_oracle()
    phrases = {" ".join(normalize(p)) for table in (PHRASES, NEGATED) for ps in table.values() for p in ps}
    assert not phrases & set(oracle.names)
    every = [p for table in (PHRASES, NEGATED) for ps in table.values() for p in ps]
    assert len(every) == len(set(every))  # a phrase belongs to one attribute
    for obj in knowledge_base().objects:
        assert set(obj.phrase()) <= set(CHARSET)


def test_the_city_table_is_complete_and_never_names_the_city_in_answers():
    cities = load_data("cities.json")["cities"]
    names = [c["name"] for c in cities]
    assert len(cities) >= 60 and len(set(names)) == len(names)
    for city in cities:
        assert set(FIELDS) <= set(city) and isinstance(city["coastal"], bool) and isinstance(city["capital"], bool)
        secret = [city["name"], *city["aliases"]]
        for field in FIELDS:
            answer = open_answer(field, city)
            assert set(answer) <= set(CHARSET), answer
            words = f" {' '.join(normalize(answer))} "
            said = [s for s in secret + ([city["country"]] if field != "country" else [])
                    if f" {' '.join(normalize(s))} " in words]
            assert not said, (city["name"], field, answer)
    assert len({tuple(str(c[f]) for f in FIELDS if f != "landmark") for c in cities}) == len(cities)


# --- Gymnasium ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", [TWENTY_QUESTIONS_ID, GUESS_MY_CITY_ID])
def test_check_env_passes_and_registration_is_idempotent(env_id, recwarn):
    assert register_dialogue_envs() == register_dialogue_envs() == [TWENTY_QUESTIONS_ID, GUESS_MY_CITY_ID, *NEW_IDS]
    env = gym.make(env_id)
    check_env(env.unwrapped)
    assert not [w for w in recwarn.list if "gymnasium" in str(w.filename)], [str(w.message) for w in recwarn]
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and {"turn", "target", "success", "candidates"} <= set(info)
    reply, *_ = env.step("Is it big?")
    assert env.observation_space.contains(reply)
    assert gym.make(env_id, max_turns=5).get_wrapper_attr("max_turns") == 5


def test_importing_the_package_registers_without_importing_the_environments():
    code = ("import sys, gymnasium, langrl.envs.dialogue as d; "
            "assert {'langrl/TwentyQuestions-v0', 'langrl/GuessMyCity-v0', 'langrl/HelpDesk-v0', "
            "'langrl/LMUser-v0'} <= set(gymnasium.registry); "
            "assert not {'langrl.envs.dialogue.twenty_questions', 'langrl.envs.dialogue.helpdesk', "
            "'langrl.envs.dialogue.lm_user'} & set(sys.modules); "
            "assert d.TwentyQuestions.__name__ == 'TwentyQuestions' and d.HelpDesk.__name__ == 'HelpDesk'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the greedy questioner against ceil(log2 N) --------------------------------------------------------------------


def test_greedy_questioner_is_near_the_information_theoretic_bound(capsys):
    env = TwentyQuestions()
    n = len(env.target_names)
    mean = greedy_mean_questions(env)
    with capsys.disabled():
        print(f"\ngreedy Twenty Questions: {mean:.3f} questions on average over all {n} targets "
              f"(log2 N = {math.log2(n):.3f}, ceil(log2 N) = {math.ceil(math.log2(n))})")
    assert math.log2(n) <= mean <= math.ceil(math.log2(n)) + 1.0
    small = TwentyQuestions(num_objects=16)
    assert greedy_mean_questions(small) <= math.ceil(math.log2(16)) + 1.0


def test_langrl_eval_plays_the_expert_on_the_held_out_episodes():
    # 8 objects: the greedy questioner asks 3 questions (1 bit each, shaping 0.1) and guesses; every turn costs
    # 0.05: 1 + 3 x 0.1 - 4 x 0.05 = 1.1
    result = langrl.evaluate("configs/twenty_questions.yaml", "expert", episodes=3)
    assert (result["success_rate"], result["turns"], result["mean_return"]) == (1.0, 4.0, pytest.approx(1.1))
    with pytest.raises(ConfigError, match="env.id=langrl/GuessMyCity-v0 has no expert policy"):
        langrl.evaluate("configs/guess_my_city.yaml", "expert", episodes=1)


def test_greedy_episodes_gain_log2_n_bits_in_total():
    env = TwentyQuestions(num_objects=30, shaping=1.0)
    for name in env.target_names[:5]:
        questions, success = greedy_questions(env, name)
        assert success and questions >= 1
    env.reset(options={"target": env.target_names[0]})
    questioner, message, total, done = optimal_questioner(env), env.opening(), 0.0, False
    while not done:
        message, _, done, truncated, info = env.step(questioner(message))
        total += info["gain"]
        assert not truncated
    assert total == pytest.approx(math.log2(30))


# --- Guess My City -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("city, question, answer", [
    ("Paris", "Which continent is it on?", "It is in Europe."),
    ("Paris", "Which country is it in?", "It is in France."),
    ("Paris", "What language do people speak there?", "The main language is French."),
    ("Paris", "Is it on the coast?", "No, it is not on the coast."),
    ("Paris", "Is it a capital city?", "Yes, it is a capital city."),
    ("Paris", "How big is it?", "It has over 10 million people."),
    ("Paris", "What is the weather like?", "The climate is oceanic: mild and often rainy all year."),
    ("Paris", "What is it famous for?", "It is famous for the Eiffel Tower."),
    ("Paris", "Is it in a Spanish-speaking country?", "No, the main language is not Spanish."),
    ("Paris", "What's your favourite colour?", "I can't say."),
    ("Tokyo", "Is it in Asia?", "Yes, it is in Asia."),
    ("Tokyo", "Is it by the sea, in Europe?", "Yes, it is on the coast. No, it is not in Europe."),
    ("Tokyo", "Is it in the southern hemisphere?", "No, it is not in the southern hemisphere."),
    ("Tokyo", "Is it a capital?", "Yes, it is a capital city."),
    ("Tokyo", "Is it Osaka?", "No, it is not Osaka."),
    ("Cape Town", "Is it in South Africa?", "Yes, it is in South Africa."),
    ("Cape Town", "Is it in Africa?", "Yes, it is in Africa."),
    ("Mexico City", "Is it in Mexico?", "Yes, it is in Mexico."),
    ("Mexico City", "Is it Mexico City?", "Yes! It is Mexico City."),
])
def test_guess_my_city_answers(city, question, answer):
    assert answer_about(city, question) == answer


def test_guess_my_city_candidates_gain_and_success():
    env = GuessMyCity()
    n = len(env.target_names)
    opening, info = env.reset(options={"target": "Tokyo"})
    assert "city" in opening and info["candidates"] == n >= 60
    reply, _, _, _, info = env.step("Which continent is it on?")
    asian = sum(c["continent"] == "Asia" for c in env.cities)
    assert reply == "It is in Asia." and info["candidates"] == asian and info["gain"] == pytest.approx(
        math.log2(n / asian))
    reply, _, _, _, info = env.step("Which country?")
    japanese = [c["name"] for c in env.cities if c["country"] == "Japan"]
    assert reply == "It is in Japan." and info["candidates"] == len(japanese) == 3
    reply, _, _, _, info = env.step("Is it Kyoto?")
    assert reply == "No, it is not Kyoto." and info["candidates"] == 2
    reply, reward, terminated, _, info = env.step("Is it Tokyo?")
    assert reply == "Yes! It is Tokyo." and terminated and info["success"] and reward == pytest.approx(0.95)
    assert info["candidates"] == 1 and info["gain"] == pytest.approx(1.0)


def test_guess_my_city_never_says_the_hidden_name_unless_guessed():
    env = GuessMyCity()
    questions = ["Where is it?", "What is it famous for?", "What language?", "Tell me about the weather.",
                 "Is it big?", "Is it a capital?", "Is it coastal?", "Which hemisphere is it in?", "Hello?"]
    answerer = shipped_answerer()
    for city in env.cities:
        for q in questions:
            reply = answerer.answer(answerer.parse(q), city)
            for secret in (city["name"], *city["aliases"], city["country"]):
                assert not re.search(rf"\b{re.escape(secret)}\b", reply, re.I), (city["name"], q, reply)
    with pytest.raises(ConfigError, match="num_cities"):
        GuessMyCity(num_cities=["Atlantis"])
    assert len(GuessMyCity(num_cities=12).target_names) == 12


def test_toy_dialogue_user_echo_rules():
    from langrl.envs.dialogue import ToyDialogue

    check_env(gym.make("langrl/ToyDialogue-v0").unwrapped)
    env = ToyDialogue(openings="c", vocab_size=4, turns=2)
    assert env.reset(seed=0)[0] == "c"
    reply, reward, terminated, truncated, info = env.step(" C!")  # first letter, case ignored
    assert (reply, reward, terminated, truncated, info["success"]) == ("d", 1.0, False, False, False)
    reply, reward, _, truncated, info = env.step("d")  # the letter after d wraps to a within 4 letters
    assert (reply, reward, truncated, info["echoed"], info["success"]) == ("a", 1.0, True, 2, True)
    env.reset(seed=0)
    assert env.step("zebra")[:2] == ("a", 0.0)  # no letter in play: no echo, the user says "a"
    with pytest.raises(ConfigError, match="openings = 'z'"):
        ToyDialogue(openings="z", vocab_size=4)
    with pytest.raises(ConfigError, match="turns = 0"):
        ToyDialogue(turns=0)
