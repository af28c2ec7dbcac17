"""Story planning (RAP-style MCTS over proposed sentences) against best-of-n at the same number of sentences
written by the LM, on shipped story openings, with the reward of configs/story.yaml (sentiment arc rising +
the classic ending + no repetition).

For each opening: MCTS (`langrl.planning.story`: K candidate sentences per state from the embedded LM; a
leaf's value is the partial story's score, or with ``--value finish`` one story finished from the leaf and
scored; every proposed sentence is scored before any is expanded; re-planned before each sentence) writes
a story of ``--length`` sentences and counts the sentences the LM wrote for it, L. Then best-of-n with
n = max(1, round(L / length)) stories sampled from the same proposer keeps the best, and one sample (n = 1)
is the LM alone. One JSON line per opening and method, then one summary line per method: mean reward,
distinct-2 over its stories, sentences and tokens the LM wrote, seconds.

    python benchmarks/bench_story_planning.py --openings 20 --simulations 8
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from langrl.config import load_any_config
from langrl.envs.prompts import locate
from langrl.eval.metrics import distinct_n
from langrl.models import load_lm
from langrl.planning.core import ZeroValue
from langrl.planning.mcts import MCTS
from langrl.planning.story import FinishedScore, SentenceProposer, Story, StoryModel, best_of_n, plan_story
from langrl.planning.world_models import cached
from langrl.rewards.build import build_reward


def summary(method: str, stories: list[Story]) -> dict[str, object]:
    return {"method": method, "stories": len(stories),
            "reward_mean": statistics.mean(s.reward for s in stories),
            "distinct_2": distinct_n([s.text for s in stories], 2),
            "sentences_mean": statistics.mean(s.sentences_written for s in stories),
            "tokens_mean": statistics.mean(s.tokens for s in stories),
            "calls_mean": statistics.mean(s.calls for s in stories),
            "seconds_mean": statistics.mean(s.seconds for s in stories)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--config", default="configs/story.yaml", help="its reward is the reward model")
    parser.add_argument("--openings", type=int, default=20, help="the first N of langrl/data/story_openings.txt")
    parser.add_argument("--length", type=int, default=3, help="sentences per story")
    parser.add_argument("--k", type=int, default=4, help="candidate sentences per state (MCTS)")
    parser.add_argument("--simulations", type=int, default=8, help="MCTS simulations per sentence")
    parser.add_argument("--c-puct", type=float, default=1.0)
    parser.add_argument("--value", choices=("partial", "finish"), default="partial",
                        help="a leaf's value: the partial story's score, or one story finished from it and scored")
    parser.add_argument("--unvisited-value", type=float, default=float("inf"),
                        help="Q of an untried sentence; inf (UCT's rule): score every proposed sentence first")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="per proposed sentence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_story_planning.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_lm(args.model, seed=args.seed)
    reward = build_reward(load_any_config(args.config, []).reward)
    lines = locate("story_openings.txt", "prompts.file").read_text().splitlines()
    openings = [line.strip() for line in lines if line.strip()][:args.openings]
    results: dict[str, list[Story]] = {"mcts": [], "best_of_n": [], "sample": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for i, opening in enumerate(openings):
            seed = args.seed + i
            proposer = SentenceProposer(lm, max_new_tokens=args.max_new_tokens, seed=seed)
            model = StoryModel(proposer, reward, args.length, args.k)
            value = ZeroValue() if args.value == "partial" else FinishedScore(model)
            planner = MCTS(cached(model, 100_000), simulations=args.simulations, c_puct=args.c_puct, value=value,
                           max_depth=args.length, unvisited_value=args.unvisited_value)
            mcts = plan_story(planner, model, opening, np.random.default_rng(seed))
            n = max(1, round(mcts.sentences_written / args.length))
            peer = SentenceProposer(lm, max_new_tokens=args.max_new_tokens, seed=seed)
            stories = {"mcts": mcts, "best_of_n": best_of_n(peer, reward, opening, n, args.length),
                       "sample": best_of_n(peer, reward, opening, 1, args.length)}
            for method, story in stories.items():
                results[method].append(story)
                row = {"opening_index": i, "method": method, "n": n if method == "best_of_n" else None,
                       **asdict(story)}
                f.write(json.dumps(row) + "\n")
                print(json.dumps({k: row[k] for k in ("opening_index", "method", "reward", "sentences_written",
                                                      "tokens", "seconds")}), flush=True)
    for method, stories in results.items():
        print(json.dumps(summary(method, stories)), flush=True)


if __name__ == "__main__":
    main()
