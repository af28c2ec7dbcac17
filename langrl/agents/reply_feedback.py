"""A log of user feedback on sampled replies: every candidate an LM proposes, scored by the simulated user.

The data of "a dialogue system trained from user feedback" before any policy is trained: for each running
conversation the LM samples K candidate replies per turn (`langrl.agents.reply_dqn.sample_candidates`, one
call for all conversations), a copy of the user's environment is stepped with each candidate, and every
candidate becomes a row

    {"prompt": the rendered conversation so far (chat template, generation prompt included),
     "completion": the candidate's text, "reward": what the user gave that reply this turn,
     "eos": whether the candidate ended, "feedback": the user's verdict ("helped", "repeats", ...),
     "goal": the episode's target, "episode": i, "turn": t, "sent": whether it was the reply sent}

The conversation goes on with the candidate the user rewarded most (``send: best``: the states a better policy
reaches, such as the user's follow-ups once something helped) or with the first one (``send: first``: the
base LM's own states). The rows are the JSONL dataset of ``kind: offline`` (``dataset.rendered: true``, since
the prompts are already rendered): filtered behaviour cloning on the replies the user rewarded is rejection-
sampling fine-tuning (RAFT, Dong et al. 2023; ReST, Gulcehre et al. 2023) with the user as the scorer; ILQL
and RWR take the same rows. Scoring every candidate needs a user that can be copied (a rule-based simulator):
with real users only the sent replies would carry feedback.

    python -m langrl.agents.reply_feedback configs/helpdesk.yaml feedback.jsonl --episodes 160 --candidates 8

``--expert`` logs the environment's expert dialogues in the same row format instead (supervised replies for
behaviour cloning before RL, as LMRL-Gym trains its policies on expert data first).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from typing import Any, Literal, cast

import gymnasium as gym
import numpy as np
import torch

from langrl.agents.reply_dqn import Candidate, ReplyLM
from langrl.config import load_any_config
from langrl.config.dialogue import DialogueConfig
from langrl.envs.text.core import make_env
from langrl.errors import ConfigError
from langrl.rollout import SamplingConfig
from langrl.rollout.dialogue import Conversation, TurnRenderer, start, step
from langrl.run import seeds
from langrl.run.io import atomic_write_jsonl
from langrl.run.runtime import load_run_lm

Send = Literal["best", "first"]


def user_verdicts(env: gym.Env, texts: Sequence[str]) -> list[tuple[float, str]]:
    """The reward and feedback a copy of ``env`` gives each of ``texts`` as this turn's reply."""
    out = []
    for text in texts:
        _, reward, _, _, info = copy.deepcopy(env).step(text)
        out.append((float(reward), str(info.get("feedback", ""))))
    return out


def row(prompt: str, completion: str, reward: float, eos: bool, feedback: str, where: dict[str, Any],
        sent: bool) -> dict[str, Any]:
    """One logged reply (the row format of the module docstring); ``where`` holds goal, episode and turn."""
    return {"prompt": prompt, "completion": completion, "reward": reward, "eos": eos, "feedback": feedback,
            **where, "sent": sent}


def candidate_rows(context: str, options: Sequence[Candidate], verdicts: Sequence[tuple[float, str]], sent: int,
                   eos: int | None, where: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per candidate of a turn."""
    return [row(context, c.text, reward, bool(c.tokens) and c.tokens[-1] == eos, feedback, where, j == sent)
            for j, (c, (reward, feedback)) in enumerate(zip(options, verdicts, strict=True))]


def log_feedback(lm: ReplyLM, envs: Sequence[gym.Env], reset_seeds: Sequence[int], generator: torch.Generator,
                 send: Send = "best", first_episode: int = 0) -> tuple[list[dict[str, Any]], list[Conversation]]:
    """One episode in each environment, all advancing together; every candidate of every turn as a row.

    Returns the rows and the conversations as played (with the sent replies)."""
    tokenizer = lm.tokenizer
    conversations = start(envs, lm.renderer, reset_seeds, [None] * len(envs))
    rows: list[dict[str, Any]] = []
    while active := [i for i, c in enumerate(conversations) if not c.done]:
        contexts = [conversations[i].context for i in active]
        for i, context, options in zip(active, contexts, lm.candidates(contexts, generator), strict=True):
            c = conversations[i]
            verdicts = user_verdicts(envs[i], [o.text for o in options])
            sent = int(np.argmax([r for r, _ in verdicts])) if send == "best" else 0
            where = {"goal": c.info.get("target"), "episode": first_episode + i, "turn": len(c.rewards)}
            rows += candidate_rows(cast(str, tokenizer.decode(context)), options, verdicts, sent,
                                   tokenizer.eos_token_id, where)
            reply = options[sent]
            step(c, envs[i], lm.renderer, reply.tokens, reply.logprobs, reply.text, lm.max_context,
                 lm.sampling.max_new_tokens)
    return rows, conversations


def feedback_lm(cfg: DialogueConfig, candidates: int) -> ReplyLM:
    """The config's model (frozen), renderer and sampling, proposing ``candidates`` replies a turn."""
    lm = load_run_lm(cfg)
    lm.model.eval().requires_grad_(False)
    return ReplyLM(lm.model, lm.tokenizer, TurnRenderer(lm.tokenizer, cfg.env.system, cfg.env.chat),
                   SamplingConfig(**cfg.sampling.model_dump()), candidates, cfg.env.max_context)


def collect(cfg: DialogueConfig, episodes: int, candidates: int, send: Send = "best",
            batch: int = 8) -> list[dict[str, Any]]:
    """``episodes`` episodes on the config's training environment (``env.kwargs``), ``batch`` at a time, with
    reset seeds and a sampling stream no training run uses; the rows of every turn."""
    lm = feedback_lm(cfg, candidates)
    generator = seeds.generator(cfg.seed, "feedback_log", device=lm.model.device)
    rows: list[dict[str, Any]] = []
    for first in range(0, episodes, batch):
        count = min(batch, episodes - first)
        envs = [make_env(cfg.env.id, cfg.env.kwargs) for _ in range(count)]
        reset = [seeds.derive_seed(cfg.seed, "feedback_episodes", first + i) for i in range(count)]
        rows += log_feedback(lm, envs, reset, generator, send, first)[0]
    return rows


def expert_rows(cfg: DialogueConfig, episodes: int) -> list[dict[str, Any]]:
    """Supervised rows instead of feedback: ``episodes`` episodes of the training environment played by its
    ``expert_policy()`` (`langrl.lm.dialogue.play_expert`), one row per expert reply (``sent`` and ``eos``
    true), its prompt the conversation before it rendered as the LM would see it."""
    from langrl.lm.dialogue import play_expert

    renderer = TurnRenderer(load_run_lm(cfg).tokenizer, cfg.env.system, cfg.env.chat)
    rows = []
    for episode, c in enumerate(play_expert(cfg, episodes, held_out=False)):
        for turn, reward in enumerate(c.rewards):
            before, reply = c.messages[:2 * turn + 1], c.messages[2 * turn + 1]
            where = {"goal": c.info.get("target"), "episode": episode, "turn": turn}
            rows.append(row(renderer.render(before, generation_prompt=True), reply["content"], reward, True,
                            "expert", where, True))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m langrl.agents.reply_feedback",
                                     description="Log a simulated user's feedback on every sampled reply.")
    parser.add_argument("config", help="a kind: dialogue YAML (its model, env, system prompt and sampling)")
    parser.add_argument("output", help="the JSONL file to write (the dataset of a kind: offline run)")
    parser.add_argument("--episodes", type=int, default=64, help="episodes on the training environment")
    parser.add_argument("--candidates", type=int, default=8, help="replies sampled and scored per turn")
    parser.add_argument("--send", choices=["best", "first"], default="best",
                        help="the reply that continues the conversation: the user's favourite or the LM's own")
    parser.add_argument("--batch", type=int, default=8, help="episodes played together")
    parser.add_argument("--expert", action="store_true",
                        help="log the environment's expert dialogues instead: supervised replies, no LM sampled")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    for name in ("episodes", "candidates", "batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} = {getattr(args, name)}: must be at least 1")
    config = load_any_config(args.config, args.overrides)
    if not isinstance(config, DialogueConfig):
        raise SystemExit(f"{args.config}: kind = {config.kind!r}; this command needs kind: dialogue")
    if args.expert:
        rows = expert_rows(config, args.episodes)
    else:
        rows = collect(config, args.episodes, args.candidates, args.send, args.batch)
    atomic_write_jsonl(args.output, rows)
    rewarded = sum(r["reward"] > 0 for r in rows)
    print(f"wrote {len(rows)} rows ({rewarded} rewarded by the user) to {args.output}")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
