"""Text environments: Gymnasium compliance, GLAM-style BabyAI descriptions, CartPole sentences, tokenising."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import langrl.envs.text as text_envs
from langrl.envs.text import CARTPOLE_ID, ENV_IDS, TokenizeObservation, decode_ids, describe_cartpole
from langrl.envs.text.cartpole import number

ROUTED = [i for i in ENV_IDS if i != "langrl/BabyAI-Text-v0"]  # the generic id needs env_id=


def needs_minigrid(env_id):
    if "BabyAI" in env_id:
        pytest.importorskip("minigrid")


@pytest.mark.parametrize("env_id", ROUTED)
def test_check_env_passes(env_id, recwarn):
    needs_minigrid(env_id)
    env = gym.make(env_id)
    check_env(env.unwrapped)
    assert not [w for w in recwarn.list if "gymnasium" in str(w.filename)], [str(w.message) for w in recwarn]
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and info["actions"]
    assert env.action_space.n == len(info["actions"])


def test_generic_babyai_id_takes_any_level():
    pytest.importorskip("minigrid")
    env = gym.make("langrl/BabyAI-Text-v0", env_id="BabyAI-GoToLocalS6N2-v0")
    obs, _ = env.reset(seed=0)
    assert obs.startswith("Goal: go to")


def test_import_registers_without_minigrid_or_env_modules():
    code = ("import sys, gymnasium, langrl.envs.text as t; "
            "assert 'langrl/CartPole-Text-v0' in gymnasium.registry; "
            "assert 'minigrid' not in sys.modules and 'langrl.envs.text.babyai' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_babyai_description_for_a_fixed_seed():
    pytest.importorskip("minigrid")
    env = gym.make("langrl/BabyAI-GoToLocal-Text-v0")
    obs, info = env.reset(seed=0)
    assert info["mission"] == "go to the green ball"
    assert obs.splitlines()[0] == "Goal: go to the green ball."
    assert "You see a green ball 3 steps forward." in obs
    assert "You see a red box 2 steps forward and 2 steps right." in obs
    assert "You see a wall 2 steps left." in obs
    assert obs.splitlines()[-1] == "You carry nothing."
    assert info["actions"] == ["turn left", "turn right", "go forward", "pick up", "drop", "toggle"]


def test_babyai_positions_match_the_grid():
    """Every 'You see a <colour> <kind> F steps forward and R steps right' names the object at that place."""
    pytest.importorskip("minigrid")
    import re

    from minigrid.core.constants import DIR_TO_VEC

    env = gym.make("langrl/BabyAI-GoToLocal-Text-v0")
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(0)
    pattern = re.compile(r"You see an? (\w+) (key|ball|box) (?:(\d+) steps? forward)?(?: and )?"
                         r"(?:(\d+) steps? (left|right))?\.")
    checked = 0
    for _ in range(20):
        grid = env.unwrapped.inner.unwrapped
        forward_vec = DIR_TO_VEC[grid.agent_dir]
        right_vec = np.array([-forward_vec[1], forward_vec[0]])
        for colour, kind, fwd, side, direction in pattern.findall(obs):
            right = int(side or 0) * (1 if direction == "right" else -1)
            x, y = np.array(grid.agent_pos) + int(fwd or 0) * forward_vec + right * right_vec
            cell = grid.grid.get(int(x), int(y))
            assert cell is not None and (cell.type, cell.color) == (kind, colour), obs
            checked += 1
        obs, *_ = env.step(int(rng.integers(3)))
    assert checked > 20


def test_describe_view_by_hand():
    pytest.importorskip("minigrid")
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

    from langrl.envs.text import describe_view

    image = np.zeros((7, 7, 3), dtype=np.uint8)  # all unseen
    image[:, 3:, 0] = OBJECT_TO_IDX["empty"]
    image[3, 2] = (OBJECT_TO_IDX["wall"], 0, 0)  # 4 steps forward
    image[2, 4] = (OBJECT_TO_IDX["ball"], COLOR_TO_IDX["red"], 0)  # 2 forward, 1 left
    image[5, 6] = (OBJECT_TO_IDX["door"], COLOR_TO_IDX["yellow"], STATE_TO_IDX["locked"])  # 2 right
    image[3, 6] = (OBJECT_TO_IDX["key"], COLOR_TO_IDX["blue"], 0)  # carried
    assert describe_view(image, "open the yellow door") == (
        "Goal: open the yellow door.\n"
        "You see a wall 4 steps forward.\n"
        "You see a locked yellow door 2 steps right.\n"
        "You see a red ball 2 steps forward and 1 step left.\n"
        "You carry a blue key."
    )


def test_cartpole_sentence_rounds_the_state():
    env = gym.make(CARTPOLE_ID)
    obs, info = env.reset(seed=0)
    state = info["state"]
    assert obs == describe_cartpole(state)
    assert f"position {state[0]:.2f}" in obs and f"turning at {state[3]:.2f}" in obs.replace("-0.00", "0.00")
    assert number(-0.001, 2) == "0.00" and number(-0.5, 1) == "-0.5"
    assert describe_cartpole(np.array([0.1234, -1.0, 0.05, 2.0]), decimals=1) == (
        "The cart is at position 0.1 moving at -1.0; the pole is at angle 0.1 turning at 2.0.")
    steps = 0
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(steps % 2)
        done, steps = terminated or truncated, steps + 1
    assert 8 < steps <= 500 and reward == 1.0


def test_tokenize_observation_pads_and_keeps_the_text(tiny):
    env = TokenizeObservation(gym.make(CARTPOLE_ID), tiny.tokenizer, max_length=128)
    ids, info = env.reset(seed=0)
    assert ids.shape == (128,) and ids.dtype == np.int64 and env.observation_space.contains(ids)
    n = len(info["text"].encode())  # the tiny tokenizer has one token per byte
    assert (ids[:n] != tiny.tokenizer.pad_token_id).all() and (ids[n:] == tiny.tokenizer.pad_token_id).all()
    assert decode_ids(tiny.tokenizer, ids) == [info["text"]]
    ids2, _, _, _, info2 = env.step(0)
    both = np.stack([ids, ids2]).astype(np.float32)  # SB3 may hand floats
    assert decode_ids(tiny.tokenizer, both) == [info["text"], info2["text"]]
    short = TokenizeObservation(gym.make(CARTPOLE_ID), tiny.tokenizer, max_length=10)
    assert short.reset(seed=0)[0].shape == (10,)


def test_lazy_names_resolve():
    assert text_envs.CartPoleText.__name__ == "CartPoleText"
    with pytest.raises(AttributeError):
        text_envs.nothing_here  # noqa: B018
