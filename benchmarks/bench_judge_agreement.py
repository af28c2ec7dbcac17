"""Does the LM judge reproduce a known reward? BabyAI "did the agent reach the goal?" against the truth.

On ``langrl/BabyAI-<level>-Text-v0`` (default GoToLocal) transitions are collected where the truth is
known: the environment's reward is positive exactly on the step that completes the mission (for GoTo
levels: the step after which the named object is the cell right in front of the agent). Per episode
seed it takes

- the last transition of minigrid's BabyAI bot solving the episode (a success),
- one random earlier transition of that bot episode (a failure, often near the goal),
- one random transition of a uniformly random policy on the same episode (a success when it happened
  to be one; rarely).

Each transition is written into the template of `LMJudgeReward` (``per="step"``: the same text the
wrapper gives the judge) and the judge's P(yes) is read for every question template in
``TEMPLATES``. Reported per template: accuracy and balanced accuracy of ``P(yes) > 0.5`` against the
truth, the AUROC of P(yes) (threshold-free), the best balanced accuracy over thresholds (optimistic: the
threshold is fitted on the same data), and the mean P(yes) of each class.

    OMP_NUM_THREADS=1 python benchmarks/bench_judge_agreement.py --episodes 100 --json judge.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from minigrid.utils.baby_ai_bot import BabyAIBot

from langrl.agents import LMJudge
from langrl.agents.judge_reward import STEP_TEMPLATE
from langrl.envs.text import BABYAI_ACTIONS, BabyAIText
from langrl.models import load_lm

# name -> (question, template). Fields: {question}, {observation}, {action}, {next_observation}.
TEMPLATES: dict[str, tuple[str, str]] = {
    # The wrapper's default step template with the plain question.
    "step_reached": ("Did the agent reach the goal?", STEP_TEMPLATE),
    # Only the result, and the success condition spelled out in the words of the observation.
    "next_obs_in_front": (
        "Is the object named in the goal exactly 1 step forward (right in front of the agent)?",
        "{next_observation}\n\n{question} Answer yes or no.",
    ),
    # The same with the rule and two worked examples (hand-written, not from the evaluated episodes).
    "next_obs_fewshot": (
        "Has the agent reached its goal?",
        "The agent has reached its goal when the object named in the goal is 1 step forward.\n\n"
        "Goal: go to the red key.\nYou see a wall 3 steps forward.\nYou see a red key 1 step forward.\n"
        "You see a grey box 2 steps left.\nYou carry nothing.\nHas the agent reached its goal? yes\n\n"
        "Goal: go to the blue box.\nYou see a wall 2 steps left.\nYou see a purple ball 1 step forward.\n"
        "You see a blue box 2 steps forward and 1 step right.\nYou carry nothing.\n"
        "Has the agent reached its goal? no\n\n"
        "{next_observation}\n{question} Answer yes or no.",
    ),
}


def transition(obs: str, action: int, next_obs: str, reward: float) -> dict[str, Any]:
    return {"observation": obs, "action": BABYAI_ACTIONS[action], "next_observation": next_obs,
            "reward": float(reward), "truth": bool(reward > 0)}


def bot_episode(env: BabyAIText, seed: int, max_steps: int = 200) -> list[dict[str, Any]]:
    """The transitions of the BabyAI bot on episode ``seed`` (ends with the success, if reached)."""
    obs, _ = env.reset(seed=seed)
    bot = BabyAIBot(env.inner.unwrapped)
    out = []
    for _ in range(max_steps):
        action = int(bot.replan())
        if action >= len(BABYAI_ACTIONS):  # the bot's "done": not an action of the text environment
            break
        next_obs, reward, terminated, truncated, _ = env.step(action)
        out.append(transition(obs, action, next_obs, reward))
        obs = next_obs
        if terminated or truncated:
            break
    return out


def random_episode(env: BabyAIText, seed: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The transitions of a uniformly random policy on episode ``seed``, until it ends."""
    obs, _ = env.reset(seed=seed)
    out = []
    while True:
        action = int(rng.integers(len(BABYAI_ACTIONS)))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        out.append(transition(obs, action, next_obs, reward))
        obs = next_obs
        if terminated or truncated:
            return out


def collect(level: str, episodes: int, seed: int) -> list[dict[str, Any]]:
    env = BabyAIText(f"BabyAI-{level}-v0")
    rng = np.random.default_rng(seed)
    data = []
    for episode in range(episodes):
        s = seed * 100_000 + episode
        bot = bot_episode(env, s)
        if bot and bot[-1]["truth"]:
            data.append({**bot[-1], "source": "bot_final", "episode": s})
        if len(bot) > 1:
            data.append({**bot[int(rng.integers(len(bot) - 1))], "source": "bot_earlier", "episode": s})
        rand = random_episode(env, s, rng)
        data.append({**rand[int(rng.integers(len(rand)))], "source": "random", "episode": s})
    return data


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2 (Mann-Whitney)."""
    pos, neg = scores[truth], scores[~truth]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(0.5 * (pred[truth].mean() + (~pred[~truth]).mean()))


def metrics(p_yes: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    pred = p_yes > 0.5
    thresholds = np.unique(p_yes)
    best = max(balanced_accuracy(p_yes >= t, truth) for t in thresholds)
    return {"accuracy": float((pred == truth).mean()), "balanced_accuracy": balanced_accuracy(pred, truth),
            "auroc": auroc(p_yes, truth), "best_threshold_balanced_accuracy": best,
            "predicted_yes_rate": float(pred.mean()),
            "p_yes_mean_positive": float(p_yes[truth].mean()),
            "p_yes_mean_negative": float(p_yes[~truth].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="GoToLocal")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm", default="smollm2-135m-instruct")
    parser.add_argument("--templates", default=",".join(TEMPLATES), help="comma-separated names of TEMPLATES")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    data = collect(args.level, args.episodes, args.seed)
    truth = np.array([d["truth"] for d in data])
    counts = {src: sum(d["source"] == src for d in data) for src in ("bot_final", "bot_earlier", "random")}
    print(f"{len(data)} transitions ({int(truth.sum())} successes), by source {counts}, "
          f"collected in {time.perf_counter() - start:.1f} s", flush=True)

    lm = load_lm(args.lm, device="cpu")
    results = []
    for name in args.templates.split(","):
        question, template = TEMPLATES[name]
        judge = LMJudge(lm, question=question, batch_size=args.batch_size)
        fields = ("observation", "action", "next_observation", "reward")
        texts = [template.format(question=question, **{k: d[k] for k in fields}) for d in data]
        start, cpu = time.perf_counter(), time.process_time()
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths batched: less padding
        p_yes = np.empty(len(texts))
        p_yes[order] = judge.score([texts[i] for i in order])
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        result = {"template": name, "question": question, "n": len(data), "positives": int(truth.sum()),
                  **metrics(p_yes, truth), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                  "judge_forward_calls": judge.forward_calls,
                  "by_source_p_yes_mean": {
                      src: float(np.mean([p for p, d in zip(p_yes, data, strict=True) if d["source"] == src]))
                      for src in counts if counts[src]}}
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "judge_agreement", "args": vars(args), "counts": counts,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
