"""CartPole: SB3 PPO on text observations through a frozen LM encoder vs SB3 PPO on the numbers.

Both agents get the same PPO hyper-parameters (the RL Zoo's tuned CartPole-v1 set) and the same number
of environment steps; each is evaluated deterministically on ``--eval-episodes`` fresh episodes.
The text agent reads ``langrl/CartPole-Text-v0`` (the state rounded to 2 decimals, in words) through
`LMEncoder` (mean-pooled final hidden states of the frozen embedded SmolLM2-135M, cached).

    OMP_NUM_THREADS=1 python benchmarks/bench_cartpole_text.py --steps 20000 --json cartpole.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import langrl.envs.text  # noqa: F401  (registers langrl/CartPole-Text-v0)
from langrl.agents import LMEncoder
from langrl.envs.text import CARTPOLE_ID, TokenizeObservation
from langrl.models import load_lm


class Rounded(gym.ObservationWrapper):
    """The numeric state rounded as the text observation rounds it: the same information, as numbers."""

    def __init__(self, env: gym.Env, decimals: int):
        super().__init__(env)
        self.decimals = decimals

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.round(observation, self.decimals).astype(np.float32)


def linear(start: float):
    """SB3 schedule: ``start`` times the remaining fraction of training."""
    return lambda remaining: remaining * start


def ppo_kwargs(n_envs: int) -> dict[str, Any]:
    """RL Zoo hyper-parameters for CartPole-v1 (n_envs 8, n_steps 32, 20 epochs...)."""
    return dict(n_steps=32, batch_size=256 if n_envs >= 8 else 32 * n_envs, gae_lambda=0.8, gamma=0.98,
                n_epochs=20, ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2))


def run(kind: str, steps: int, n_envs: int, eval_episodes: int, seed: int, lm_name: str,
        decimals: int | None = None, layers: int | None = None) -> dict[str, Any]:
    """Train one agent, evaluate it, return its figures."""
    torch.manual_seed(seed)
    policy_kwargs: dict[str, Any] = {}
    if kind == "text":
        lm = load_lm(lm_name, device="cpu")

        def make() -> gym.Env:
            return TokenizeObservation(gym.make(CARTPOLE_ID), lm.tokenizer, max_length=48)

        policy_kwargs = {"features_extractor_class": LMEncoder,
                         "features_extractor_kwargs": {"lm": lm, "layers": layers}}
    elif decimals is None:
        def make() -> gym.Env:
            return gym.make("CartPole-v1")
    else:
        def make() -> gym.Env:
            return Rounded(gym.make("CartPole-v1"), decimals)

    env = DummyVecEnv([make] * n_envs)
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **ppo_kwargs(n_envs))
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(steps)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu  # CPU: robust to load
    eval_env = DummyVecEnv([lambda: Monitor(make())] * min(eval_episodes, 10))
    eval_env.seed(seed + 1000)
    start = time.perf_counter()
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes, deterministic=True,
                                 return_episode_rewards=True)
    eval_s = time.perf_counter() - start
    out = {"agent": kind if decimals is None or kind == "text" else f"numeric, {decimals} decimals",
           "steps": int(model.num_timesteps), "train_s": round(train_s, 1),
           "train_cpu_s": round(train_cpu_s, 1),
           "eval_s": round(eval_s, 1), "eval_episodes": eval_episodes,
           "eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns))}
    if kind == "text":
        encoder = model.policy.features_extractor
        out.update(lm=lm_name, layers=layers, lm_forward_calls=encoder.lm_forward_calls,
                   cache_hits=encoder.cache.hits, cache_misses=encoder.cache.misses)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm", default="smollm2-135m-instruct")
    parser.add_argument("--agents", default="numeric,text", help="comma-separated: numeric, text")
    parser.add_argument("--numeric-decimals", type=int, default=None,
                        help="round the numeric agent's state as the text does (2): same information")
    parser.add_argument("--layers", type=int, default=None,
                        help="text agent: encode with the LM's first N decoder blocks (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # 1 on a shared machine; set OMP_NUM_THREADS to match
    results = []
    for kind in args.agents.split(","):
        result = run(kind, args.steps, args.n_envs, args.eval_episodes, args.seed, args.lm,
                     args.numeric_decimals, args.layers)
        print(json.dumps(result), flush=True)
        results.append(result)
    if len(results) == 2:
        a, b = results
        ratio = b["train_s"] / max(a["train_s"], 1e-9)
        print(f"train time ratio {b['agent']}/{a['agent']}: {ratio:.1f}x; eval return "
              f"{a['agent']} {a['eval_return_mean']:.1f} vs {b['agent']} {b['eval_return_mean']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "cartpole_text", "args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
