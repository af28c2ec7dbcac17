"""``kind: reply_dqn`` as a run: reply selection with DQN (`langrl.agents.reply_dqn`) in a run folder.

    config -> frozen LM, renderer, Q-network learner -> rounds of reply_dqn.parallel episodes (epsilon-greedy over
    K sampled replies per turn, TD updates from replay) -> metrics row + checkpoint per round as due
    -> held-out evaluation: greedy Q-selector vs first candidate (the base LM's own sample) -> report

A round r (the run's step) plays episodes (r - 1) P + 1 .. r P with reset seeds, candidate sampling and
exploration/replay draws all derived from (seed, r) (`langrl.run.seeds`), and epsilon fixed by the episodes
before it. With a ``distributed`` section (``shards`` or ``rollout_workers`` set) a round's episodes are played in
shards with the round's start weights, in the learner's process or on Ray actors, and learned from afterwards
(`langrl.agents.reply_dqn_collect`).

A checkpoint (after a round) holds the online and target networks, Adam's state, the replay buffer (its filled
part, pickled) and the transition and update counters, so a resumed run logs what the uninterrupted
one logs.

``metrics.jsonl``, one row per round: ``episode/count``, ``episode/success_rate``, ``episode/turns``,
``reward/mean`` and ``reward/std`` (episode returns of the round), ``explore/epsilon``, ``replay/transitions``,
``train/updates``, ``loss/td`` and ``q/mean`` (once training started), ``time/round_s``.
``evaluation.json``: the held-out evaluation of both selectors and the best-of-K KL bound.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_model

from langrl.agents.reply_dqn import (
    EpsilonGreedy,
    FirstCandidate,
    Greedy,
    ReplyDQN,
    ReplyLM,
    ReplyQNetwork,
    ReplySettings,
    Selector,
    UpdateStats,
    UserOracle,
    epsilon_at,
    kl_bound_per_turn,
    play_episodes,
    summarise_conversations,
)
from langrl.agents.reply_dqn_collect import (
    LocalReplyShards,
    RayReplyShards,
    ReplyCollector,
    ReplyShardPlayer,
    learn_from,
)
from langrl.config.reply_dqn import ReplyDQNConfig
from langrl.distributed.shards import shard_indices
from langrl.envs.text.core import make_env
from langrl.errors import ConfigError
from langrl.report.lm import write_report
from langrl.rollout import SamplingConfig
from langrl.rollout.dialogue import Conversation, TurnRenderer
from langrl.run import seeds
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import module_checkpoint, trained_config
from langrl.run.harness import Checkpointed, RunHarness, TrainResult, resolve_run_dir, run_name
from langrl.run.io import atomic_write_json, read_jsonl
from langrl.run.logger import RunLogger
from langrl.run.runtime import load_run_lm

EVALUATION_FILE = "evaluation.json"
SELECTORS = (("first_candidate", "first candidate (the base LM's own sample, no selection)"),
             ("q_selector", "Q-selector (greedy over the K candidates)"),
             ("user_oracle", "user oracle (the candidate the user rewards most: an upper bound, not a policy)"))


@dataclass
class ReplyRun:
    config: ReplyDQNConfig
    lm: ReplyLM
    learner: ReplyDQN
    envs: list[gym.Env]  # one per episode of a round
    collector: ReplyCollector | None = None  # where rounds are played in shards; None: the single-process loop

    @property
    def rounds(self) -> int:
        return rounds_of(self.config)


def rounds_of(cfg: ReplyDQNConfig) -> int:
    """Rounds of ``reply_dqn.parallel`` episodes that play ``reply_dqn.episodes`` (the last may be smaller)."""
    return math.ceil(cfg.reply_dqn.episodes / cfg.reply_dqn.parallel)


def settings(cfg: ReplyDQNConfig) -> ReplySettings:
    d = cfg.reply_dqn
    return ReplySettings(candidates=d.candidates, gamma=d.gamma, lr=d.lr, hidden=tuple(d.hidden),
                         normalize=d.normalize, buffer_size=d.buffer_size, batch_size=d.batch_size,
                         learning_starts=d.learning_starts, train_every=d.train_every,
                         gradient_steps=d.gradient_steps, target_update_every=d.target_update_every,
                         double_q=d.double_q, max_grad_norm=d.max_grad_norm)


def build_lm(cfg: ReplyDQNConfig) -> ReplyLM:
    """The frozen LM (no gradients, eval mode) with the config's renderer and candidate sampling."""
    lm = load_run_lm(cfg)
    lm.model.eval().requires_grad_(False)
    return ReplyLM(lm.model, lm.tokenizer, TurnRenderer(lm.tokenizer, cfg.env.system, cfg.env.chat),
                   SamplingConfig(**cfg.sampling.model_dump()), cfg.reply_dqn.candidates, cfg.env.max_context)


def build_run(cfg: ReplyDQNConfig) -> ReplyRun:
    lm = build_lm(cfg)
    torch.manual_seed(cfg.seed)  # the Q-network's initialisation
    learner = ReplyDQN(lm.hidden_size, settings(cfg), lm.model.device)
    envs = [make_env(cfg.env.id, cfg.env.kwargs) for _ in range(min(cfg.reply_dqn.parallel, cfg.reply_dqn.episodes))]
    return ReplyRun(cfg, lm, learner, envs)


def build_shard_player(cfg: ReplyDQNConfig, run: ReplyRun | None = None) -> ReplyShardPlayer:
    """What plays a run's shards: the frozen LM, a Q-network for the learner's weights, environments. A rollout
    worker builds it from the config alone (``run`` None: its own LM and environments)."""
    lm = run.lm if run is not None else build_lm(cfg)
    with torch.random.fork_rng(devices=[]):  # its initial weights are never read: the learner's are loaded
        q = ReplyQNetwork(lm.hidden_size, cfg.reply_dqn.candidates, cfg.reply_dqn.hidden,
                          cfg.reply_dqn.normalize).to(lm.model.device)
    return ReplyShardPlayer(lm, q, functools.partial(make_env, cfg.env.id, cfg.env.kwargs), cfg.seed,
                            run.envs if run is not None else ())


def build_collector(cfg: ReplyDQNConfig, run: ReplyRun) -> ReplyCollector | None:
    """Where the shards are played: Ray rollout workers, this process, or (no shards) nowhere."""
    if cfg.collection_shards is None:
        return None
    if cfg.distributed.remote:
        return RayReplyShards(cfg, cfg.distributed, builder="langrl.agents.reply_dqn_run:build_shard_player")
    return LocalReplyShards(build_shard_player(cfg, run))


# ---------------------------------------------------------------------------------------------- train


def train_reply_dqn(config: ReplyDQNConfig, output: str | Path | None = None, resume: bool = False,
                    allow_config_change: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train the reply selector as ``config`` says (``kind: reply_dqn``); `langrl.train` dispatches here."""
    run_dir = resolve_run_dir(run_name(config, "reply_dqn"), output, resume)
    run = build_run(config)
    run.collector = build_collector(config, run)
    try:
        return train_run(run, run_dir, resume, allow_config_change, callbacks)
    finally:
        if run.collector is not None:
            run.collector.close()


def train_run(run: ReplyRun, run_dir: Path, resume: bool, allow_config_change: bool,
              callbacks: Sequence[Callback]) -> TrainResult:
    config, learner = run.config, run.learner
    parts = Checkpointed(None, None, learner.optimizer, {"q": learner.q, "target": learner.target},
                         {"replay": learner.buffer})
    last: dict[str, float] = {}
    with RunHarness(run_dir, config, config.log, parts, allow_config_change, callbacks) as harness:
        saved = harness.restore() if resume else {}
        if saved:
            learner.buffer = parts.objects["replay"]
            learner.transitions, learner.updates = int(saved["transitions"]), int(saved["updates"])
        with harness.session(total=run.rounds, desc="reply_dqn") as logger:
            for r in harness.steps(run.rounds):
                last, conversations = train_round(run, r)
                harness.log(logger, r, last)
                if r == 1 or r % config.log.sample_every == 0:
                    logger.log_samples(r, openings(conversations), transcripts(conversations),
                                       [c.episode_return for c in conversations])
                if harness.due(r, run.rounds):
                    harness.checkpoint(r, {"transitions": learner.transitions, "updates": learner.updates,
                                           "episodes": int(last["episode/count"])})
                harness.advance(reward=last["reward/mean"], success=last["episode/success_rate"],
                                eps=last["explore/epsilon"])
            evaluate_phase(run, logger, harness.last_step)
    write_reply_report(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summarise_reply_dqn(run_dir))


def train_round(run: ReplyRun, r: int) -> tuple[dict[str, float], list[Conversation]]:
    """Play round ``r`` epsilon-greedily, learning as transitions arrive; its metrics row and conversations."""
    cfg, d = run.config, run.config.reply_dqn
    first = (r - 1) * d.parallel
    n = min(d.parallel, d.episodes - first)
    epsilon = epsilon_at(first, d.episodes, d.exploration_initial_eps, d.exploration_final_eps,
                         d.exploration_fraction)
    t0 = time.perf_counter()
    if run.collector is not None:
        conversations, stats = sharded_round(run, r, n, epsilon)
    else:
        selector = EpsilonGreedy(run.learner, epsilon, np.random.default_rng(seeds.derive_seed(cfg.seed,
                                                                                               "reply_explore", r)))
        generator = seeds.generator(cfg.seed, "sampling", r, device=run.lm.model.device)
        reset = [seeds.derive_seed(cfg.seed, "episodes", r, i) for i in range(n)]
        conversations = play_episodes(run.lm, run.envs[:n], reset, selector, generator)
        stats = selector.stats
    returns = [c.episode_return for c in conversations]
    summary = summarise_conversations(conversations)
    row = {"episode/count": first + n, "episode/success_rate": summary["success_rate"],
           "episode/turns": summary["turns"], "reward/mean": statistics.fmean(returns),
           "reward/std": statistics.stdev(returns) if n > 1 else 0.0, "explore/epsilon": epsilon,
           "replay/transitions": run.learner.transitions, "train/updates": run.learner.updates,
           **stats.metrics(), "time/round_s": time.perf_counter() - t0}
    return row, conversations


def sharded_round(run: ReplyRun, r: int, n: int, epsilon: float) -> tuple[list[Conversation], UpdateStats]:
    """Round ``r``'s ``n`` episodes played in shards with the round's start weights, then learned from in shard
    and episode order (`langrl.agents.reply_dqn_collect`)."""
    cfg = run.config
    assert run.collector is not None and cfg.collection_shards is not None, "played in shards"
    parts = shard_indices(range(n), cfg.collection_shards)
    # version r: the weights change every round (the statistics at least), and a resumed run's pool starts anew
    played = [e for shard in run.collector.collect(run.learner.q, r, r, parts, epsilon) for e in shard]
    stats = UpdateStats()
    learn_from(run.learner, played, np.random.default_rng(seeds.derive_seed(cfg.seed, "reply_replay", r)), stats)
    return [e.conversation for e in played], stats


def openings(conversations: Sequence[Conversation]) -> list[str]:
    return [c.messages[0]["content"] for c in conversations]


def transcripts(conversations: Sequence[Conversation]) -> list[str]:
    """Each conversation after its opening, one ``role: text`` line per turn."""
    return ["\n".join(f"{m['role']}: {m['content']}" for m in c.messages[1:]) for c in conversations]


# ---------------------------------------------------------------------------------------------- evaluation


def play_evaluation(cfg: ReplyDQNConfig, lm: ReplyLM, selector: Callable[[list[gym.Env]], Selector],
                    episodes: int) -> list[Conversation]:
    """``episodes`` held-out episodes (``env.eval_kwargs``) with seeds no training round uses, played by
    ``selector(envs)`` per batch; every selector gets the same reset seeds and the same sampling generator per
    batch, so their first turns see the same candidates."""
    kwargs = {**cfg.env.kwargs, **cfg.env.eval_kwargs}
    out: list[Conversation] = []
    for first in range(0, episodes, cfg.eval.batch):
        count = min(cfg.eval.batch, episodes - first)
        envs = [make_env(cfg.env.id, kwargs) for _ in range(count)]
        reset = [seeds.derive_seed(cfg.seed, "eval_episodes", first + i) for i in range(count)]
        generator = seeds.generator(cfg.seed, "evaluate", first, device=lm.model.device)
        out += play_episodes(lm, envs, reset, selector(envs), generator)
        for env in envs:
            env.close()
    return out


def compare_selectors(cfg: ReplyDQNConfig, lm: ReplyLM, q: ReplyQNetwork,
                      episodes: int) -> dict[str, list[Conversation]]:
    """The held-out episodes of the first-candidate baseline and of the greedy Q-selector (and of the user oracle
    with ``eval.user_oracle``)."""
    q.eval()
    selectors: dict[str, Callable[[list[gym.Env]], Selector]] = {"first_candidate": lambda envs: FirstCandidate(),
                                                                 "q_selector": lambda envs: Greedy(q)}
    if cfg.eval.user_oracle:
        selectors["user_oracle"] = UserOracle
    return {name: play_evaluation(cfg, lm, selector, episodes) for name, selector in selectors.items()}


def evaluation_summary(cfg: ReplyDQNConfig, played: dict[str, list[Conversation]]) -> dict[str, Any]:
    """Each selector's success rate, mean return and turns, and the KL bound per turn and per episode."""
    k = cfg.reply_dqn.candidates
    out: dict[str, Any] = {name: summarise_conversations(conversations) for name, conversations in played.items()}
    bound = kl_bound_per_turn(k)
    out.update({"candidates": k, "held_out": bool(cfg.env.eval_kwargs), "kl_bound_per_turn": bound,
                "kl_bound_per_episode": bound * out["q_selector"]["turns"]})
    return out


def evaluate_phase(run: ReplyRun, logger: RunLogger, step: int) -> None:
    """Play the held-out episodes with both selectors; record them (``before``: first candidate, ``after``:
    Q-selector in ``eval_samples.jsonl``) and their summary (``evaluation.json``)."""
    cfg = run.config
    if cfg.eval.episodes == 0:
        return
    played = compare_selectors(cfg, run.lm, run.learner.q, cfg.eval.episodes)
    for phase, name in (("before", "first_candidate"), ("after", "q_selector")):
        conversations = played[name]
        logger.log_eval_samples(phase, step, openings(conversations), transcripts(conversations),
                                [c.episode_return for c in conversations], held_out=bool(cfg.env.eval_kwargs))
    atomic_write_json(logger.run_dir / EVALUATION_FILE, evaluation_summary(cfg, played))


def summarise_reply_dqn(run_dir: Path) -> dict[str, Any]:
    """The evaluation (``evaluation.json``) and the lines the command line prints."""
    path = Path(run_dir) / EVALUATION_FILE
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    lines = [f"{label}: success rate {results[name]['success_rate']:.3f}, mean return "
             f"{results[name]['mean_return']:.3f}, {results[name]['turns']:.2f} turns "
             f"({int(results[name]['episodes'])} held-out episodes)"
             for name, label in SELECTORS if name in results]
    if results:
        lines.append(f"KL(Q-selector || base LM) <= {results['kl_bound_per_turn']:.3f} nats per turn "
                     f"(best-of-{results['candidates']} bound), <= {results['kl_bound_per_episode']:.3f} per episode")
    return {**results, "headline": lines or ["no evaluation episodes (eval.episodes: 0)"]}


def fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def write_reply_report(run_dir: Path) -> Path:
    """The LM report with the reply-selection section added."""
    path = write_report(Path(run_dir))
    append_reply_report(Path(run_dir))
    return path


def append_reply_report(run_dir: Path) -> None:
    """Add the before/after table of the two selectors and the training rounds to ``report.md``."""
    summary = summarise_reply_dqn(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl", missing_ok=True)
    lines = ["", "## Reply selection (DQN over K sampled replies)", ""]
    if "q_selector" in summary:
        k = summary["candidates"]
        which = "held-out" if summary["held_out"] else "evaluation"
        lines += [f"{int(summary['q_selector']['episodes'])} {which} episodes, the same reset and sampling seeds for "
                  f"both (in the samples above, `before` is the first candidate and `after` the Q-selector).", "",
                  "| replies chosen by | success rate | mean return | turns |", "|---|---|---|---|"]
        lines += [f"| {label} | {fmt(summary[name]['success_rate'])} | {fmt(summary[name]['mean_return'])} | "
                  f"{fmt(summary[name]['turns'])} |" for name, label in SELECTORS if name in summary]
        lines += ["", f"KL(Q-selector || base LM) <= log {k} - {k - 1}/{k} = {summary['kl_bound_per_turn']:.3f} nats "
                      f"per turn (best-of-{k} bound, whatever Q learned), <= {summary['kl_bound_per_episode']:.3f} "
                      f"nats per episode at its mean turns."]
    else:
        lines.append("No evaluation episodes (eval.episodes: 0).")
    every = max(1, len(rows) // 10)
    lines += ["", "| round | episodes | success rate | mean return | epsilon | loss/td | q/mean |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {int(r['episode/count'])} | {fmt(r['episode/success_rate'])} | "
              f"{fmt(r['reward/mean'])} | {fmt(r['explore/epsilon'])} | {fmt(r.get('loss/td'))} | "
              f"{fmt(r.get('q/mean'))} |" for r in rows[::every]]
    report = run_dir / "report.md"
    report.write_text(report.read_text(encoding="utf-8") + "\n".join(lines) + "\n", encoding="utf-8")


def evaluate_kind(config: ReplyDQNConfig, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: reply_dqn`` (``num_prompts`` does not apply): the run's Q-selector and the
    first-candidate baseline on ``episodes`` (default ``eval.episodes``) held-out episodes."""
    path = module_checkpoint(model, "q.safetensors", "reply_dqn")
    cfg: ReplyDQNConfig = trained_config(path, config, "reply_dqn")
    n = cfg.eval.episodes if episodes is None else episodes
    if n < 1:
        raise ConfigError("eval.episodes = 0: nothing to evaluate; pass --episodes N (e.g. --episodes 32)")
    lm = build_lm(cfg)
    q = ReplyQNetwork(lm.hidden_size, cfg.reply_dqn.candidates, cfg.reply_dqn.hidden, cfg.reply_dqn.normalize)
    load_model(q, str(path / "q.safetensors"))
    q.to(lm.model.device)
    t0 = time.perf_counter()
    played = compare_selectors(cfg, lm, q, n)
    summary = evaluation_summary(cfg, played)
    samples = {name: [{"opening": o, "dialogue": t, "return": c.episode_return}
                      for o, t, c in zip(openings(played[name][:2]), transcripts(played[name][:2]), played[name][:2],
                                         strict=True)] for name in played}
    return {"model": model, "checkpoint": str(path), "env": cfg.env.id, **summary, "samples": samples,
            "time_s": time.perf_counter() - t0}
