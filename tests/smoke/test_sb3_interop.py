"""Stable-Baselines3 and the RL Zoo: langrl's wrapper, encoder, policies and prior built from names, as an
RL Zoo hyperparameter YAML builds them, and saved agents that hold those names instead of an LM.

rl_zoo3 is not a dependency: :func:`zoo_model` does what ``python -m rl_zoo3.train`` does with a
hyperparameter entry (``env_wrapper`` classes by dotted path called as ``Class(env, **kwargs)``, ``policy``
by dotted path, ``policy_kwargs`` evaluated when a string), with only ``dict`` in scope: names and numbers.
"""

from __future__ import annotations

import base64
import functools
import importlib
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3.common.env_util import make_vec_env  # noqa: E402  (after the importorskip)

from langrl.agents.encoder import LMEncoder  # noqa: E402
from langrl.agents.prior import LMActionPrior  # noqa: E402
from langrl.agents.sb3 import LMActorCriticPolicy, LMDQNPolicy, PriorActorCriticPolicy, PriorDQN  # noqa: E402
from langrl.envs.text import CARTPOLE_ACTIONS, CARTPOLE_ID, DecodeIds, TokenizeObservation, decode_ids  # noqa: E402
from langrl.envs.text.tokenize import load_tokenizer  # noqa: E402
from langrl.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ALGOS = {"ppo": sb3.PPO, "a2c": sb3.A2C, "dqn": sb3.DQN}
WRAPPER = "langrl.envs.text.tokenize.TokenizeObservation: {tokenizer: tiny, max_length: 64}"


# ---------------------------------------------------------------- what the RL Zoo does with a YAML entry

def import_by_path(path: str) -> Any:
    """``package.module.Name`` -> the object (rl_zoo3's ``get_class_by_name``)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def zoo_wrapper(entries: list[Any]):
    """rl_zoo3's ``get_wrapper_class``: each entry a dotted class path, alone or mapped to its kwargs."""
    pairs = [(e, {}) if isinstance(e, str) else next(iter(e.items())) for e in entries]
    classes = [(import_by_path(name), kwargs or {}) for name, kwargs in pairs]

    def wrap(env: gym.Env) -> gym.Env:
        for cls, kwargs in classes:
            env = cls(env, **kwargs)
        return env

    return wrap


def zoo_model(text: str, algo: str, n_timesteps: int | None = None, env_id: str = CARTPOLE_ID):
    """The model ``rl_zoo3.train --algo ALGO --env ENV_ID [-n N]`` builds from a hyperparameter YAML, and
    the number of steps to train it."""
    hyperparams = dict(yaml.safe_load(text)[env_id])
    steps = n_timesteps or int(hyperparams.pop("n_timesteps"))
    hyperparams.pop("n_timesteps", None)
    wrap = zoo_wrapper(hyperparams.pop("env_wrapper", []))
    if "." in hyperparams["policy"]:
        hyperparams["policy"] = import_by_path(hyperparams["policy"])
    if isinstance(hyperparams.get("policy_kwargs"), str):  # rl_zoo3 evaluates it; here with only dict in scope
        hyperparams["policy_kwargs"] = eval(hyperparams["policy_kwargs"], {"__builtins__": {"dict": dict}})
    env = make_vec_env(env_id, n_envs=hyperparams.pop("n_envs", 1), seed=0, wrapper_class=wrap)
    return ALGOS[algo](env=env, seed=0, device="cpu", **hyperparams), steps


def pickled_items(path: Path) -> dict[str, bytes]:
    """The cloudpickled entries of an SB3 zip's ``data`` (``policy_kwargs``, a PriorDQN's ``prior``, ...)."""
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("data"))
    return {key: base64.b64decode(item[":serialized:"]) for key, item in data.items()
            if isinstance(item, dict) and ":serialized:" in item}


def pickled_lm(path: Path) -> list[str]:
    """The entries whose pickle holds an LM: a pickled model names its class's module (the tiny LM is a Llama)."""
    return [key for key, blob in pickled_items(path).items() if b"modeling_llama" in blob]


def trained(model, steps: int):
    """``model`` after ``steps`` of training, with its parameters changed and finite."""
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(steps)
    after = list(model.policy.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert all(torch.isfinite(p).all() for p in after)
    return model


# ---------------------------------------------------------------- names instead of objects

def test_tokenize_observation_and_decoder_take_a_model_name(tiny):
    by_name = TokenizeObservation(gym.make(CARTPOLE_ID), "tiny", max_length=96)
    by_object = TokenizeObservation(gym.make(CARTPOLE_ID), tiny.tokenizer, max_length=96)
    ids, info = by_name.reset(seed=0)
    np.testing.assert_array_equal(ids, by_object.reset(seed=0)[0])
    assert by_name.observation_space == by_object.observation_space
    assert load_tokenizer("tiny") is by_name.tokenizer  # loaded once per process
    decode = DecodeIds("tiny")
    assert decode(ids[None]) == decode_ids(tiny.tokenizer, ids) == [info["text"]]
    assert len(pickle.dumps(decode)) < 200 and pickle.loads(pickle.dumps(decode)) == decode  # the name only
    with pytest.raises(ConfigError, match="max_length = 0"):
        TokenizeObservation(gym.make(CARTPOLE_ID), "tiny", max_length=0)
    with pytest.raises(ConfigError, match="tokenizer = LM object"):
        TokenizeObservation(gym.make(CARTPOLE_ID), tiny)


def test_prior_by_name_pickles_as_its_spec(tiny):
    prior = LMActionPrior(tiny, CARTPOLE_ACTIONS, calibrate=True)
    blob = pickle.dumps(prior)
    assert b"modeling_llama" not in blob and len(blob) < 2_000
    again = pickle.loads(blob)
    assert again.spec == prior.spec and again.spec["lm"] == "tiny" and again.calibrate
    obs = ["The cart is at position 0.01 moving at 0.02; the pole is at angle 0.03 turning at 0.04."]
    np.testing.assert_allclose(again.logprobs(obs), prior.logprobs(obs), atol=1e-6)
    assert pickle.loads(pickle.dumps(again)).lm is again.lm  # one model per name per process
    with pytest.raises(ConfigError, match="unknown key"):
        LMActionPrior.from_spec({"lm": "tiny", "actions": ["a"], "temprature": 2.0})
    with pytest.raises(ConfigError, match="missing"):
        LMActionPrior.from_spec({"lm": "tiny"})
    with pytest.raises(ConfigError, match="actions = 'push left'"):
        LMActionPrior("tiny", "push left")


def test_policies_reject_bad_priors_decoders_and_models():
    env = TokenizeObservation(gym.make(CARTPOLE_ID), "tiny", max_length=32)
    kwargs = {"decode": "tiny", "features_extractor_kwargs": {"lm": "tiny"}}
    with pytest.raises(ConfigError, match="prior actions = .* 3 strings for an environment with 2"):
        sb3.PPO(PriorActorCriticPolicy, env, device="cpu",
                policy_kwargs={"prior": {"lm": "tiny", "actions": ["a", "b", "c"]}, **kwargs})
    with pytest.raises(ConfigError, match="decode = 3"):
        sb3.PPO(PriorActorCriticPolicy, env, device="cpu",
                policy_kwargs={**kwargs, "prior": {"lm": "tiny", "actions": list(CARTPOLE_ACTIONS)}, "decode": 3})
    with pytest.raises(ConfigError, match="lm = int object"):
        sb3.PPO(LMActorCriticPolicy, env, device="cpu", policy_kwargs={"features_extractor_kwargs": {"lm": 3}})


# ---------------------------------------------------------------- RL Zoo YAML

ZOO_YAML = {
    "ppo": f"""
langrl/CartPole-Text-v0:
  env_wrapper:
    - {WRAPPER}
  policy: langrl.agents.sb3.LMActorCriticPolicy
  policy_kwargs: "dict(features_extractor_kwargs=dict(lm='tiny', pooling='last'), net_arch=[16])"
  n_timesteps: 256
  n_steps: 128
  batch_size: 64
  n_epochs: 2
""",
    "a2c": f"""
langrl/CartPole-Text-v0:
  env_wrapper:
    - {WRAPPER}
  policy: langrl.agents.sb3.PriorActorCriticPolicy
  policy_kwargs: "dict(prior=dict(lm='tiny', actions=['push left', 'push right']), decode='tiny',
    features_extractor_kwargs=dict(lm='tiny', layers=1), net_arch=[16])"
  n_envs: 2
  n_timesteps: 256
  n_steps: 8
""",
    "dqn": f"""
langrl/CartPole-Text-v0:
  env_wrapper:
    - {WRAPPER}
  policy: langrl.agents.sb3.LMDQNPolicy
  policy_kwargs: "dict(features_extractor_kwargs=dict(lm='tiny'), net_arch=[16])"
  n_timesteps: 256
  learning_starts: 64
  buffer_size: 1000
  train_freq: 4
""",
}


@pytest.mark.parametrize("algo", list(ZOO_YAML))
def test_build_the_lm_encoder_from_an_rl_zoo_yaml(algo):
    model, steps = zoo_model(ZOO_YAML[algo], algo)
    encoder = model.policy.features_extractor if algo != "dqn" else model.policy.q_net.features_extractor
    assert isinstance(encoder, LMEncoder) and model.env.observation_space.shape == (64,)
    trained(model, steps)
    assert encoder.cache.hits > 0
    if algo == "a2c":
        assert model.policy.prior.spec["lm"] == "tiny" and model.policy.prior.cache.hits > 0


def docs_zoo_yaml() -> list[str]:
    """The YAML blocks of docs/agents.md's "With the RL Zoo", with the tiny model in place of the embedded one."""
    text = (ROOT / "docs" / "agents.md").read_text(encoding="utf-8")
    section = text.split("### With the RL Zoo", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```", section, flags=re.M | re.S)
    return [b.replace("smollm2-135m-instruct", "tiny") for b in blocks]


def test_the_rl_zoo_yaml_of_the_docs_trains():
    blocks = docs_zoo_yaml()
    assert len(blocks) == 2
    for block in blocks:
        assert block.startswith("# ppo")  # both are PPO hyperparameter files
        model, _ = zoo_model(block, "ppo", n_timesteps=256)  # `-n 256`
        assert isinstance(model.policy.features_extractor, LMEncoder)
        trained(model, 256)


# ---------------------------------------------------------------- save/load round trips

def random_ids(n: int = 6, length: int = 64, seed: int = 0) -> np.ndarray:
    """(n, length) byte-token ids no environment wrote: new to both the saved and the loaded encoder's cache,
    so both fold them into their running statistics the same way. Ids 3..258 are the tiny model's bytes."""
    ids = np.random.default_rng(seed).integers(3, 259, size=(n, length))
    ids[:, length // 2:] = 0  # right padding, as TokenizeObservation writes
    return ids


def outputs(model, obs: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """Deterministic actions and the full action distribution (or Q-values) for ``obs``."""
    actions, _ = model.predict(obs, deterministic=True)
    tensor = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        if hasattr(model, "q_net"):
            return actions, model.q_net(tensor)
        return actions, model.policy.get_distribution(tensor).distribution.probs


def cartpole_env():
    return TokenizeObservation(gym.make(CARTPOLE_ID), "tiny", max_length=64)


def ppo(policy, **policy_kwargs):
    return sb3.PPO(policy, cartpole_env(), n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
                   policy_kwargs={"net_arch": [16], **policy_kwargs})


def dqn(cls, **kwargs):
    return cls(LMDQNPolicy, cartpole_env(), learning_starts=16, buffer_size=200, train_freq=4, seed=0,
               device="cpu", policy_kwargs={"net_arch": [16], "features_extractor_kwargs": {"lm": "tiny"}}, **kwargs)


PRIOR_SPEC = {"lm": "tiny", "actions": list(CARTPOLE_ACTIONS)}
AGENTS = {  # every SB3 policy (and encoder mode) langrl provides: name -> builder
    "ppo-encoder": lambda tiny: ppo(LMActorCriticPolicy, features_extractor_kwargs={"lm": "tiny"}),
    "a2c-encoder-full": lambda tiny: sb3.A2C(LMActorCriticPolicy, cartpole_env(), n_steps=8, seed=0, device="cpu",
                                             policy_kwargs={"features_extractor_kwargs": {"lm": "tiny",
                                                                                          "finetune": "full"}}),
    "ppo-encoder-lora": lambda tiny: ppo(LMActorCriticPolicy,
                                         features_extractor_kwargs={"lm": "tiny", "finetune": "lora", "lora_r": 2}),
    "ppo-prior-spec": lambda tiny: ppo(PriorActorCriticPolicy, prior=PRIOR_SPEC, decode="tiny", prior_weight=2.0,
                                       features_extractor_kwargs={"lm": "tiny"}),
    "ppo-prior-object": lambda tiny: ppo(PriorActorCriticPolicy, prior=LMActionPrior(tiny, CARTPOLE_ACTIONS),
                                         decode=functools.partial(decode_ids, tiny.tokenizer),
                                         features_extractor_kwargs={"lm": "tiny"}),
    "dqn-encoder": lambda tiny: dqn(sb3.DQN),
    "prior-dqn": lambda tiny: dqn(PriorDQN, prior=PRIOR_SPEC, decode="tiny"),
}


@pytest.mark.parametrize("name", list(AGENTS))
def test_save_load_round_trip_gives_identical_predictions_without_the_lm_in_the_zip(name, tiny, tmp_path):
    model = AGENTS[name](tiny)
    model.learn(64)
    path = tmp_path / "agent.zip"
    model.save(path)
    assert not pickled_lm(path), f"the LM was pickled into {pickled_lm(path)}"
    loaded = type(model).load(path, device="cpu")
    obs = random_ids()
    want_actions, want = outputs(model, obs)
    got_actions, got = outputs(loaded, obs)
    np.testing.assert_array_equal(got_actions, want_actions)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    prior = getattr(loaded, "prior", None) or getattr(loaded.policy, "prior", None)
    if prior is not None:  # rebuilt from its spec, by name
        original = getattr(model, "prior", None) or model.policy.prior
        texts = loaded.decode(obs) if hasattr(loaded, "decode") else loaded.policy.decode(obs)
        assert prior.spec == original.spec and prior is not original
        np.testing.assert_allclose(prior.logprobs(texts), original.logprobs(texts), atol=1e-6)


def test_an_lm_object_in_policy_kwargs_is_pickled_whole(tiny, tmp_path):
    """The control of the check above: an `LM` given as an object does land in the zip (give names)."""
    model = ppo(LMActorCriticPolicy, features_extractor_kwargs={"lm": tiny})
    model.save(tmp_path / "agent.zip")
    assert pickled_lm(tmp_path / "agent.zip") == ["policy_kwargs"]


def test_prior_dqn_load_takes_a_new_prior_as_a_spec(tmp_path):
    model = dqn(PriorDQN, prior=PRIOR_SPEC, decode="tiny")
    model.save(tmp_path / "agent.zip")
    swapped = PriorDQN.load(tmp_path / "agent.zip", device="cpu", decode="tiny",
                            prior={"lm": "tiny", "actions": ["push left", "push right"], "temperature": 5.0})
    assert isinstance(swapped.prior, LMActionPrior) and swapped.prior.temperature == 5.0
    assert swapped.decode == DecodeIds("tiny")
    assert swapped.sample_prior(random_ids(3)).shape == (3,)
