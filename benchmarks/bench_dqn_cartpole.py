"""langrl's DQN against Stable-Baselines3's DQN on CartPole-v1, side by side, same hyperparameters (the RL
Zoo's), several seeds: greedy evaluation return (20 episodes) at the end of training, median and IQM
(interquartile mean, Agarwal et al. 2021) with 95% bootstrap confidence intervals, and wall time.

    python benchmarks/bench_dqn_cartpole.py --seeds 5                 # ~2 min per run and side here
    python benchmarks/bench_dqn_cartpole.py --seeds 2 --steps 5000    # plumbing only

Each (side, seed) runs in this process one after the other (torch threads as set by the environment);
nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

ZOO = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
           target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
           exploration_final_eps=0.04)
EVAL_EPISODES = 20


def cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


def run_langrl(seed: int, steps: int) -> float:
    from langrl.agents.dqn import DQNSettings, evaluate_dqn, train_dqn

    result = train_dqn(cartpole, DQNSettings(total_steps=steps, hidden=(256, 256), seed=seed, **ZOO))
    return float(np.mean(evaluate_dqn(result.q_network, cartpole, EVAL_EPISODES)))


def run_sb3(seed: int, steps: int) -> float:
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy

    model = DQN("MlpPolicy", cartpole(), policy_kwargs=dict(net_arch=[256, 256]), seed=seed, verbose=0, **ZOO)
    model.learn(steps)
    mean, _ = evaluate_policy(model, cartpole(), n_eval_episodes=EVAL_EPISODES, deterministic=True)
    return float(mean)


def iqm(x: np.ndarray) -> float:
    """The interquartile mean: the mean after dropping the lowest and highest quarter of the scores."""
    cut = len(x) // 4
    return float(np.sort(x)[cut:len(x) - cut].mean())


def bootstrap(x: np.ndarray, stat: Callable[[np.ndarray], float], reps: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of ``stat`` over the seeds."""
    rng = np.random.default_rng(seed)
    values = [stat(rng.choice(x, size=len(x), replace=True)) for _ in range(reps)]
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sides = {"langrl": run_langrl, "sb3": run_sb3}
    out: dict[str, dict] = {}
    for name, run in sides.items():
        scores, times = [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            scores.append(run(seed, args.steps))
            times.append(time.perf_counter() - t0)
            print(f"{name:7s} seed {seed}: return {scores[-1]:6.1f} in {times[-1]:5.0f} s", flush=True)
        x = np.array(scores)
        out[name] = {"returns": scores, "wall_s": times, "median": float(np.median(x)),
                     "median_ci": bootstrap(x, lambda v: float(np.median(v))), "iqm": iqm(x),
                     "iqm_ci": bootstrap(x, iqm), "wall_s_median": float(np.median(times))}
    print(f"\n{'side':7s} {'median':>8s} {'95% CI':>16s} {'IQM':>8s} {'95% CI':>16s} {'s/run':>7s}")
    for name, r in out.items():
        print(f"{name:7s} {r['median']:8.1f} {str([round(v, 1) for v in r['median_ci']]):>16s} {r['iqm']:8.1f} "
              f"{str([round(v, 1) for v in r['iqm_ci']]):>16s} {r['wall_s_median']:7.0f}")
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "seeds": args.seeds, "zoo": ZOO, **out}, indent=2))


if __name__ == "__main__":
    main()
