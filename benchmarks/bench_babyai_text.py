"""BabyAI: SB3 PPO with a frozen LM encoder over the text description vs PPO on minigrid's symbolic view.

Same level, same PPO hyper-parameters, same step budget. The symbolic agent sees the 7x7x3 egocentric
grid encoding flattened (147 integers) followed by the mission's target colour and object type one-hot
(the grid alone does not say which object to go to); the text agent
sees ``langrl/BabyAI-<level>-Text-v0`` through `LMEncoder` (frozen embedded SmolLM2-135M, mean-pooled,
cached: BabyAI views recur, so most observations are encoded once). Evaluation: ``--eval-episodes``
deterministic episodes; success is a positive episode return.

    OMP_NUM_THREADS=1 python benchmarks/bench_babyai_text.py --steps 4096 --json babyai.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers BabyAI-*)
import numpy as np
import torch
from minigrid.core.constants import COLOR_NAMES
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import langrl.envs.text  # noqa: F401  (registers langrl/BabyAI-*-Text-v0)
from langrl.agents import LMEncoder
from langrl.envs.text import TokenizeObservation, babyai_id
from langrl.models import load_lm


class SixActions(gym.ActionWrapper):
    """Minigrid's first six actions, as in the text environment (``done`` dropped)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.action_space = gym.spaces.Discrete(6)

    def action(self, action: int) -> int:
        return int(action)


OBJECT_TYPES = ("ball", "box", "key", "door")


class MissionOneHot(gym.ObservationWrapper):
    """Flattened grid encoding + one-hot target colour + one-hot target type, read from the mission
    ("go to the red ball"); missions without a colour or type word leave that block zero."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        size = int(np.prod(env.observation_space["image"].shape)) + len(COLOR_NAMES) + len(OBJECT_TYPES)
        self.observation_space = gym.spaces.Box(0.0, 255.0, (size,), np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        words = observation["mission"].split()
        colour = np.array([c in words for c in COLOR_NAMES], np.float32)
        kind = np.array([t in words for t in OBJECT_TYPES], np.float32)
        return np.concatenate([observation["image"].reshape(-1).astype(np.float32), colour, kind])


def ppo_kwargs() -> dict[str, Any]:
    """A small-budget PPO set for BabyAI single-room levels."""
    return dict(n_steps=128, batch_size=256, n_epochs=4, gamma=0.99, gae_lambda=0.95, ent_coef=0.01,
                learning_rate=3e-4, clip_range=0.2)


def run(kind: str, level: str, steps: int, n_envs: int, eval_episodes: int, seed: int,
        lm_name: str) -> dict[str, Any]:
    torch.manual_seed(seed)
    policy_kwargs: dict[str, Any] = {}
    if kind == "text":
        lm = load_lm(lm_name, device="cpu")

        def make() -> gym.Env:
            return TokenizeObservation(gym.make(babyai_id(level)), lm.tokenizer, max_length=192)

        policy_kwargs = {"features_extractor_class": LMEncoder, "features_extractor_kwargs": {"lm": lm}}
    else:
        def make() -> gym.Env:
            return MissionOneHot(SixActions(gym.make(f"BabyAI-{level}-v0")))

    env = DummyVecEnv([make] * n_envs)
    env.seed(seed)
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **ppo_kwargs())
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(steps)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu  # CPU: robust to load
    eval_env = DummyVecEnv([lambda: Monitor(make())] * 10)
    eval_env.seed(seed + 1000)
    start = time.perf_counter()
    returns, lengths = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes, deterministic=True,
                                       return_episode_rewards=True)
    eval_s = time.perf_counter() - start
    out = {"agent": kind, "level": level, "steps": int(model.num_timesteps), "train_s": round(train_s, 1),
           "train_cpu_s": round(train_cpu_s, 1),
           "eval_s": round(eval_s, 1), "eval_episodes": eval_episodes,
           "success_rate": float(np.mean(np.asarray(returns) > 0)),
           "eval_return_mean": float(np.mean(returns)), "eval_length_mean": float(np.mean(lengths))}
    if kind == "text":
        encoder = model.policy.features_extractor
        out.update(lm=lm_name, lm_forward_calls=encoder.lm_forward_calls, cache_hits=encoder.cache.hits,
                   cache_misses=encoder.cache.misses)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="GoToLocal")
    parser.add_argument("--steps", type=int, default=4096)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm", default="smollm2-135m-instruct")
    parser.add_argument("--agents", default="symbolic,text", help="comma-separated: symbolic, text")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core: the machine is shared; set OMP_NUM_THREADS=1 as well
    results = []
    for kind in args.agents.split(","):
        result = run(kind, args.level, args.steps, args.n_envs, args.eval_episodes, args.seed, args.lm)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "babyai_text", "args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
