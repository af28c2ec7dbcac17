"""BabyAI-GoToLocal: the LM agent (GLAM recipe: the LM scores action strings; bot cloning, then PPO) vs
SB3 PPO on minigrid's symbolic view, at equal environment steps.

The LM agent is `langrl train CONFIG` (default ``configs/babyai_goto.yaml``: embedded SmolLM2-135M,
behaviour cloning from BabyAIBot, PPO). SB3 PPO sees the 7x7x3 grid encoding flattened, with the same six
actions, and takes as many environment steps as the LM agent's PPO phase (the bot's demonstration
steps are reported separately: they are the expert's, not the learner's). Both are evaluated greedily
on the same held-out seeds (``eval.seed_start`` ...) at the same environment-step points; success is
a terminated episode with a positive reward. Wall and CPU time (CPU time is robust to a shared machine)
are reported for both.

    OMP_NUM_THREADS=1 python benchmarks/bench_babyai_lm_agent.py                  # the full comparison
    OMP_NUM_THREADS=1 python benchmarks/bench_babyai_lm_agent.py --quick          # minutes: plumbing only
    OMP_NUM_THREADS=1 python benchmarks/bench_babyai_lm_agent.py --cost           # s per env step / sample
    ... --set ppo.env_steps=20000 --set env.num_envs=16 --json out.json --plot out.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers BabyAI-*)
import numpy as np
import torch

import langrl.envs.text  # noqa: F401  (registers langrl/BabyAI-*-Text-v0)
from langrl.agents.episodes import bot_episodes
from langrl.agents.imitation import demo_views
from langrl.agents.lm_agent import build_policy, train_agent
from langrl.config.agent import AgentConfig, load_agent_config
from langrl.envs.text.core import action_names, make_env
from langrl.models import load_lm
from langrl.run.io import read_jsonl

sys.path.insert(0, str(Path(__file__).parent))
from bench_babyai_text import SixActions, ppo_kwargs  # noqa: E402  (the symbolic agent of that benchmark)

QUICK = ["env.num_envs=4", "ppo.n_steps=8", "ppo.env_steps=64", "ppo.epochs=1", "ppo.minibatch_size=8",
         "imitation.episodes=8", "imitation.epochs=1", "eval.episodes=8", "eval.every=1",
         "env.max_episode_steps=24", "log.tensorboard=false"]


# ---------------------------------------------------------------------------------------------- LM agent

def lm_curve(run_dir: Path) -> dict[str, Any]:
    """Held-out success rate against PPO environment steps, and the prior's and the cloned policy's."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    curve = [(int(r["env/steps"]), r["eval/success_rate"], r["eval/mean_return"]) for r in rows
             if r.get("eval/success_rate") is not None]
    phases = {p: next((r[f"{p}/success_rate"] for r in rows if r.get(f"{p}/success_rate") is not None), None)
              for p in ("prior", "cloned")}
    demo = next((r for r in rows if "bc/samples" in r), {})
    last = [r for r in rows if r.get("time/elapsed_s") is not None]
    return {"curve": curve, **phases, "demo_steps": demo.get("bc/samples"),
            "wall_s": last[-1]["time/elapsed_s"] if last else None}


def run_lm(config: str, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    result = train_agent(config, output=out_dir / f"lm-{time.strftime('%Y%m%d-%H%M%S')}", overrides=overrides)
    return {"run_dir": str(result.run_dir), **lm_curve(result.run_dir),
            "total_wall_s": time.perf_counter() - start, "total_cpu_s": time.process_time() - cpu}


# ---------------------------------------------------------------------------------------------- SB3

def symbolic_env(cfg: AgentConfig) -> gym.Env:
    """The minigrid level under the text environment, its image flattened, the same six actions."""
    level = gym.make(cfg.env.id).unwrapped.env_id  # type: ignore[attr-defined]
    env = gym.make(level, max_episode_steps=cfg.env.max_episode_steps)
    return gym.wrappers.FlattenObservation(minigrid.wrappers.ImgObsWrapper(SixActions(env)))


def sb3_success(model: Any, cfg: AgentConfig) -> tuple[float, float]:
    """Greedy success rate and mean return on the LM agent's held-out seeds."""
    env = symbolic_env(cfg)
    successes, returns = [], []
    for seed in range(cfg.eval.seed_start, cfg.eval.seed_start + cfg.eval.episodes):
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        successes.append(terminated and reward > 0)
        returns.append(total)
    return float(np.mean(successes)), float(np.mean(returns))


def run_sb3(cfg: AgentConfig, points: list[int]) -> dict[str, Any]:
    """SB3 PPO for max(points) steps, evaluated when it first reaches each point."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    steps = max(points)
    kwargs = ppo_kwargs()
    kwargs["n_steps"] = max(8, min(kwargs["n_steps"], steps // cfg.env.num_envs))
    kwargs["batch_size"] = min(kwargs["batch_size"], kwargs["n_steps"] * cfg.env.num_envs)
    curve: list[tuple[int, float, float]] = []
    todo = sorted(points)

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            while todo and self.num_timesteps >= todo[0]:
                curve.append((todo.pop(0), *sb3_success(self.model, cfg)))
            return True

    torch.manual_seed(cfg.seed)
    env = DummyVecEnv([lambda: symbolic_env(cfg)] * cfg.env.num_envs)
    env.seed(cfg.seed)
    model = PPO("MlpPolicy", env, seed=cfg.seed, device="cpu", **kwargs)
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(steps, callback=Evaluate())
    while todo:  # a point past SB3's last whole rollout
        curve.append((todo.pop(0), *sb3_success(model, cfg)))
    return {"curve": curve, "total_wall_s": time.perf_counter() - start,
            "total_cpu_s": time.process_time() - cpu, "ppo": kwargs}


# ---------------------------------------------------------------------------------------------- cost

def measure_cost(cfg: AgentConfig, repeats: int = 3) -> dict[str, Any]:
    """Seconds per environment step of a rollout (one batched no-grad scoring pass over num_envs prompts,
    per environment) and per trained sample (forward + backward of a minibatch, per sample)."""
    make = lambda: make_env(cfg.env.id, cfg.env.kwargs, cfg.env.max_episode_steps)  # noqa: E731
    lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    policy = build_policy(cfg, lm, action_names(make(), cfg.seed))
    seeds = range(cfg.imitation.seed_start, cfg.imitation.seed_start + 12)
    views, targets = demo_views(bot_episodes(make, seeds), policy.actions, policy.window)
    n, mb = cfg.env.num_envs, min(cfg.ppo.minibatch_size, cfg.imitation.batch_size, 8)
    prompts = policy.prompt_ids(views)
    lengths = [len(p) for p in prompts]
    policy.act(prompts[:n])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        policy.act(prompts[:n])
    act_wall, act_cpu = (time.perf_counter() - start) / repeats, (time.process_time() - cpu) / repeats
    policy.train()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        logits, values = policy(prompts[:mb])
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets[:mb])) + values.pow(2).mean()
        loss.backward()
    train_wall, train_cpu = (time.perf_counter() - start) / repeats, (time.process_time() - cpu) / repeats
    return {"model": cfg.model, "window": policy.window, "prompt_tokens_mean": float(np.mean(lengths)),
            "num_envs": n, "env_step_s": act_wall / n, "env_step_cpu_s": act_cpu / n,
            "batch_step_s": act_wall, "minibatch": mb, "train_sample_s": train_wall / mb,
            "train_sample_cpu_s": train_cpu / mb, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------- main

def plot(lm: dict[str, Any], sb3: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.2), dpi=110, layout="constrained")
    ax = fig.subplots()
    for name, res, colour in (("LM agent (BC + PPO)", lm, "tab:red"), ("SB3 PPO, symbolic", sb3, "tab:blue")):
        if res["curve"]:
            x, y, _ = zip(*res["curve"], strict=True)
            ax.plot(x, y, "o-", color=colour, label=f"{name}, {res['total_wall_s']:.0f} s")
    for key, style in (("prior", ":"), ("cloned", "--")):
        if lm.get(key) is not None:
            ax.axhline(lm[key], color="tab:red", linestyle=style, alpha=0.6, label=f"LM {key}")
    ax.set_xlabel("PPO environment steps")
    ax.set_ylabel("success rate (held-out seeds)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/babyai_goto.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="a few updates and episodes: the plumbing")
    parser.add_argument("--cost", action="store_true", help="only measure s per env step and per sample")
    parser.add_argument("--repeats", type=int, default=3, help="--cost: timed repetitions")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--out", default="runs/bench_babyai_lm_agent")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write the side-by-side curves here (default: OUT/curves.png)")
    args = parser.parse_args()
    overrides = (QUICK if args.quick else []) + args.overrides
    cfg = load_agent_config(args.config, overrides)
    if args.cost:
        print(json.dumps(measure_cost(cfg, args.repeats), indent=2))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = run_lm(args.config, overrides, out)
    points = [p for p, _, _ in lm["curve"]] or [cfg.updates * cfg.ppo.n_steps * cfg.env.num_envs]
    sb3 = {"curve": [], "total_wall_s": 0.0} if args.skip_sb3 else run_sb3(cfg, points)
    result = {"config": args.config, "overrides": overrides, "lm_agent": lm, "sb3_ppo_symbolic": sb3}
    print("| PPO env steps | LM agent success | SB3 PPO success |\n|---|---|---|")
    sb3_at = {p: s for p, s, _ in sb3["curve"]}
    for p, s, _ in lm["curve"]:
        print(f"| {p} | {s:.2f} | {sb3_at.get(p, float('nan')):.2f} |")
    print(f"LM agent: prior {lm['prior']}, cloned {lm['cloned']} ({lm['demo_steps']} bot steps); "
          f"wall {lm['total_wall_s']:.0f} s (cpu {lm['total_cpu_s']:.0f} s). "
          f"SB3: wall {sb3['total_wall_s']:.0f} s.")
    plot(lm, sb3, Path(args.plot) if args.plot else out / "curves.png")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
