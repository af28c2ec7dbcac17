"""langrl's DQN against Stable-Baselines3's DQN on CartPole-v1, side by side, same hyperparameters (the RL
Zoo's), several seeds, both sides in one run, each with the Zoo's protocol of periodic evaluation and
best-model selection:

- every ``--eval-every`` environment steps, ``--eval-episodes`` greedy episodes from the evaluation seeds
  1,000,000 + k choose the best network (SB3: its ``EvalCallback``, with episode k reset from seed
  1,000,000 + k as langrl's evaluation does; the first of equal scores is kept on both sides);
- at the end, the final and the best network of each side play ``--test-episodes`` greedy episodes from the
  test seeds 2,000,000 + k, which took no part in the choice (the best network's score on the seeds that
  chose it is biased upward), through one and the same function for both sides (`play_greedy` on the
  Q-network: SB3's ``q_net`` is what its deterministic ``predict`` takes the argmax of).

Reported over the seeds: median and IQM (interquartile mean, Agarwal et al. 2021) with 95% bootstrap
intervals of the final and the best network's test return; the evaluation curve against environment
steps (median and IQM over seeds) and the training wall time reached at each evaluation (evaluations
excluded); the seeds whose best network tests at >= 475.

    python benchmarks/bench_dqn_cartpole.py --seeds 5                 # ~2 min per run and side, quiet machine
    python benchmarks/bench_dqn_cartpole.py --seeds 2 --steps 5000 --eval-every 2500   # plumbing only
    python benchmarks/bench_dqn_cartpole.py --first-seed 2 --seeds 3 --json b.json      # more seeds, apart
    python benchmarks/bench_dqn_cartpole.py --summarise a.json b.json                  # reported together

Runs go one after the other in this process (seed 0: langrl then SB3, seed 1: ...), one torch thread
(``--threads``); nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

ZOO = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
           target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
           exploration_final_eps=0.04)
EVAL_SEED, TEST_SEED = 1_000_000, 2_000_000
SOLVED = 475.0


def cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


def held_out_return(network: torch.nn.Module, episodes: int) -> float:
    """Mean greedy return over the test seeds: the same code for both sides."""
    from langrl.agents.dqn import evaluate_dqn

    return float(np.mean(evaluate_dqn(network, cartpole, episodes, seed=TEST_SEED)))


def run_langrl(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from langrl.agents.dqn import DQNSettings, train_dqn

    settings = DQNSettings(total_steps=args.steps, hidden=(256, 256), seed=seed, eval_every=args.eval_every,
                           eval_episodes=args.eval_episodes, eval_seed_start=EVAL_SEED, **ZOO)
    result = train_dqn(cartpole, settings)
    assert result.best is not None
    return {"curve": [[e.env_steps, e.mean_return, e.train_s] for e in result.evaluations],
            "train_s": result.train_s, "best_step": result.best.step,
            "final": held_out_return(result.q_network, args.test_episodes),
            "best": held_out_return(result.best.network, args.test_episodes)}


class SeedCycle(gym.Wrapper):
    """Resets from ``seeds[0]``, ``seeds[1]``, ... in turn, whatever seed it is given; ``restart`` goes back to
    the first. SB3's ``evaluate_policy`` then plays its episode k from seed k, as langrl's evaluation does
    (its vector env resets once more after the last episode: the seed after the last, never played)."""

    def __init__(self, env: gym.Env, seeds: list[int]):
        super().__init__(env)
        self.seeds, self.k = seeds, 0

    def restart(self) -> None:
        self.k = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        chosen = self.seeds[self.k % len(self.seeds)]
        self.k += 1
        return self.env.reset(seed=chosen, options=options)


def seeded_eval_callback(eval_env: SeedCycle, **kwargs: Any) -> Any:
    """SB3's EvalCallback whose every evaluation starts the seed cycle again, recording (steps, mean
    return, training seconds without evaluations) at each evaluation."""
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.monitor import Monitor

    class SeededEvalCallback(EvalCallback):
        def __init__(self) -> None:
            super().__init__(Monitor(eval_env), **kwargs)
            self.curve: list[list[float]] = []
            self.eval_s, self.start = 0.0, time.perf_counter()

        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            due = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
            if due:
                eval_env.restart()
            t0 = time.perf_counter()
            go = super()._on_step()
            if due:
                self.eval_s += time.perf_counter() - t0
                self.curve.append([self.num_timesteps, self.last_mean_reward,
                                   time.perf_counter() - self.start - self.eval_s])
            return bool(go)

    return SeededEvalCallback()


def run_sb3(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from stable_baselines3 import DQN

    eval_env = SeedCycle(cartpole(), list(range(EVAL_SEED, EVAL_SEED + args.eval_episodes)))
    with tempfile.TemporaryDirectory() as folder:
        callback = seeded_eval_callback(eval_env, n_eval_episodes=args.eval_episodes, eval_freq=args.eval_every,
                                        best_model_save_path=folder, deterministic=True, verbose=0, warn=False)
        model = DQN("MlpPolicy", cartpole(), policy_kwargs=dict(net_arch=[256, 256]), seed=seed, verbose=0,
                    device="cpu", **ZOO)
        model.learn(args.steps, callback=callback)
        best = DQN.load(Path(folder) / "best_model.zip", device="cpu")
        best_step = min(c[0] for c in callback.curve if c[1] == callback.best_mean_reward)  # the first kept
        return {"curve": callback.curve, "train_s": time.perf_counter() - callback.start - callback.eval_s,
                "best_step": best_step, "final": held_out_return(model.q_net, args.test_episodes),
                "best": held_out_return(best.q_net, args.test_episodes)}


def iqm(x: np.ndarray) -> float:
    """The interquartile mean: the mean after dropping the lowest and highest quarter of the scores."""
    cut = len(x) // 4
    return float(np.sort(x)[cut:len(x) - cut].mean())


def median(x: np.ndarray) -> float:
    return float(np.median(x))


def bootstrap(x: np.ndarray, stat: Callable[[np.ndarray], float], reps: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of ``stat`` over the seeds."""
    rng = np.random.default_rng(seed)
    values = [stat(rng.choice(x, size=len(x), replace=True)) for _ in range(reps)]
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and IQM (95% CIs) of the final and best test returns; the evaluation curve over seeds."""
    out: dict[str, Any] = {}
    for which in ("final", "best"):
        x = np.array([r[which] for r in runs])
        out[which] = {"returns": x.tolist(), "median": median(x), "median_ci": bootstrap(x, median),
                      "iqm": iqm(x), "iqm_ci": bootstrap(x, iqm), "solved": int((x >= SOLVED).sum())}
    steps = sorted({int(c[0]) for r in runs for c in r["curve"]})
    curve = []
    for step in steps:
        points = [c for r in runs for c in r["curve"] if int(c[0]) == step]
        values = np.array([c[1] for c in points])
        curve.append({"env_steps": step, "median": median(values), "iqm": iqm(values), "seeds": len(values),
                      "train_s_median": median(np.array([c[2] for c in points]))})
    out["curve"] = curve
    out["train_s_median"] = median(np.array([r["train_s"] for r in runs]))
    return out


def show(ci: list[float]) -> str:
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def report(sides: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'side':7s} {'network':8s} {'median':>7s} {'95% CI':>15s} {'IQM':>7s} {'95% CI':>15s} "
          f"{'>= 475':>7s} {'train s':>8s}")
    for name, s in sides.items():
        for which in ("final", "best"):
            r = s[which]
            print(f"{name:7s} {which:8s} {r['median']:7.1f} {show(r['median_ci']):>15s} {r['iqm']:7.1f} "
                  f"{show(r['iqm_ci']):>15s} {r['solved']:>3d} of {len(r['returns'])} {s['train_s_median']:8.0f}")
    print("\nevaluation curve (median / IQM of the evaluation return over seeds; median training s so far)")
    names = list(sides)
    print(f"{'steps':>7s} " + " ".join(f"{n + ' med/IQM':>16s} {'s':>6s}" for n in names))
    for i, point in enumerate(sides[names[0]]["curve"]):
        cells = []
        for n in names:
            p = sides[n]["curve"][i] if i < len(sides[n]["curve"]) else None
            cells.append("" if p is None else f"{p['median']:7.1f} /{p['iqm']:7.1f} {p['train_s_median']:6.0f}")
        print(f"{point['env_steps']:7d} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--test-episodes", type=int, default=20)
    parser.add_argument("--sides", default="langrl,sb3", help="comma-separated: langrl, sb3")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--summarise", type=Path, nargs="+", default=None, metavar="JSON",
                        help="train nothing: report the runs of these --json files together (e.g. seeds run apart)")
    args = parser.parse_args()
    if args.summarise:
        merged: dict[str, list[dict[str, Any]]] = {}
        for file in args.summarise:
            for name, rs in json.loads(file.read_text())["runs"].items():
                merged.setdefault(name, []).extend(rs)
        report({name: summary(rs) for name, rs in merged.items()})
        return
    torch.set_num_threads(args.threads)
    run = {"langrl": run_langrl, "sb3": run_sb3}
    names = args.sides.split(",")
    import langrl.agents.dqn  # noqa: F401  (imports outside the timed runs)
    if "sb3" in names:
        import stable_baselines3  # noqa: F401
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in names:
            t0 = time.perf_counter()
            r = run[name](seed, args)
            r["wall_s"], r["seed"] = time.perf_counter() - t0, seed
            runs[name].append(r)
            print(f"{name:7s} seed {seed}: test return final {r['final']:6.1f}, best {r['best']:6.1f} (chosen at "
                  f"{r['best_step']:.0f} steps); training {r['train_s']:5.0f} s, with evaluations "
                  f"{r['wall_s']:5.0f} s", flush=True)
            if args.json:  # what is done so far, in case the benchmark is stopped
                args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs}))
    sides = {name: summary(rs) for name, rs in runs.items()}
    report(sides)
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "zoo": ZOO,
                                         "runs": runs, "summary": sides}, indent=2))


if __name__ == "__main__":
    main()
