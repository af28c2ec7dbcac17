"""Multi-turn RL (``kind: dialogue``): an LM plays whole episodes with a simulated user and learns from them.

config -> model, reference, renderer -> episodes (`langrl.rollout.dialogue`, G per start state) -> returns
-> KL on the policy's tokens -> REINFORCE/RLOO/GRPO update -> harness. A batch of conversations is a
TokenRollout whose ``completion_mask`` covers only the policy's tokens: the user's turns are context, never
trained on, and the KL to the reference is summed over the policy's tokens alone. Start states (the
environment's reset seeds) and sampling are functions of (seed, step), so a resumed run repeats the
uninterrupted one.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.config import Config
from langrl.config.dialogue import DialogueConfig
from langrl.envs.text.core import make_env
from langrl.errors import ConfigError
from langrl.lm.algorithms import Algorithm, build_algorithm
from langrl.lm.trainer import make_batch
from langrl.models import LM, Reference, apply_lora, load_lm, merged_lora
from langrl.report.lm import write_report
from langrl.rl.kl import sequence_kl
from langrl.rollout import SamplingConfig
from langrl.rollout.dialogue import Conversation, TurnRenderer, as_rollout, run_conversations
from langrl.run import seeds
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import newest_checkpoint
from langrl.run.harness import Checkpointed, RunHarness, TrainResult, resolve_run_dir, run_name
from langrl.run.io import atomic_write_json, read_jsonl
from langrl.run.logger import RunLogger
from langrl.run.optim import build_optimizer, freeze, set_lr, trainable
from langrl.run.runtime import load_run_lm

EVALUATION_FILE = "evaluation.json"  # success rate, return and turns of the held-out episodes, before/after


@dataclass
class DialogueRun:
    config: DialogueConfig
    policy: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    reference: Reference
    optimizer: torch.optim.Optimizer
    algorithm: Algorithm
    renderer: TurnRenderer
    envs: list[gym.Env]  # one per episode of a step

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(**self.config.sampling.model_dump())


def build_run(cfg: DialogueConfig) -> DialogueRun:
    lm = load_run_lm(cfg)
    reference = Reference(lm.model, use_adapter=cfg.lora is not None and cfg.kl.reference != "copy")
    policy: PreTrainedModel = lm.model
    if cfg.lora is not None:
        policy = cast(PreTrainedModel, apply_lora(policy, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout,
                                                  cfg.lora.target_modules))
    freeze(policy, cfg.train.freeze)
    policy.eval()
    # The policy-gradient algorithms read the sections a dialogue config shares with an LM config.
    algorithm = build_algorithm(cast(Config, cfg), policy, None)
    optimizer = build_optimizer(trainable(policy, algorithm.modules()), cfg.optim)
    envs = [make_env(cfg.env.id, cfg.env.kwargs) for _ in range(cfg.episodes_per_step * cfg.sampling.group_size)]
    return DialogueRun(cfg, policy, lm.tokenizer, reference, optimizer, algorithm,
                       TurnRenderer(lm.tokenizer, cfg.env.system, cfg.env.chat), envs)


def train_dialogue(config: DialogueConfig, output: str | Path | None = None, resume: bool = False,
                   allow_config_change: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train the policy as ``config`` says (``kind: dialogue``); `langrl.train` dispatches here."""
    run_dir = resolve_run_dir(run_name(config, "dialogue"), output, resume)
    run = build_run(config)
    parts = Checkpointed(run.policy, run.tokenizer, run.optimizer, run.algorithm.modules())
    last: dict[str, float] = {}
    with RunHarness(run_dir, config, config.log, parts, allow_config_change, callbacks) as harness:
        if resume:
            run.algorithm.load_state_dict(harness.restore().get("algorithm", {}))
        with harness.session(total=config.steps, desc="dialogue") as logger:
            if harness.start == 0:
                evaluate_phase(run, logger, "before", 0)
            for step in harness.steps(config.steps):
                last, texts = train_step(run, step)
                harness.log(logger, step, last)
                if step == 1 or step % config.log.sample_every == 0:
                    logger.log_samples(step, *texts)
                if harness.due(step, config.steps):
                    harness.checkpoint(step, {"algorithm": run.algorithm.state_dict()})
                harness.advance(reward=last["reward/mean"], success=last["episode/success_rate"],
                                kl=last["kl/ref"])
            evaluate_phase(run, logger, "after", config.steps)
    write_dialogue_report(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summarise_dialogue(run_dir))


def start_seeds(cfg: DialogueConfig, step: int) -> list[int]:
    """The reset seed of each episode of ``step``: one per start state, repeated for its group."""
    return [seeds.derive_seed(cfg.seed, "episodes", step, p)
            for p in range(cfg.episodes_per_step) for _ in range(cfg.sampling.group_size)]


def train_step(run: DialogueRun, step: int) -> tuple[dict[str, float], tuple[list[str], list[str], list[float]]]:
    cfg = run.config
    t0 = time.perf_counter()
    generator = seeds.generator(cfg.seed, "sampling", step, device=run.policy.device)
    with merged_lora(run.algorithm.behaviour(run.policy)) as snapshot:
        conversations = run_conversations(snapshot, run.renderer, run.envs, start_seeds(cfg, step),
                                          [None] * len(run.envs), run.sampling, generator, cfg.env.max_context)
    t_play = time.perf_counter()
    rollout = as_rollout(conversations, run.tokenizer.pad_token_id, run.policy.device)
    returns = [c.episode_return for c in conversations]
    batch = make_batch(run.policy, run.reference, rollout, returns, cfg.kl.estimator, run.sampling, step)
    set_lr(run.optimizer, cfg.optim, step, cfg.steps)
    update = run.algorithm.update(run.policy, run.optimizer, batch)
    update.update(run.algorithm.after_update(batch))
    t_end = time.perf_counter()
    metrics = {
        "reward/mean": statistics.fmean(returns),
        "reward/std": statistics.stdev(returns) if len(returns) > 1 else 0.0,
        "kl/ref": float(sequence_kl(batch.kl_tokens, batch.completion_mask).mean()),
        **update,
        **episode_stats(conversations),
        "lr": run.optimizer.param_groups[0]["lr"],
        "time/step_s": t_end - t0,
        "time/play_s": t_play - t0,
        "time/update_s": t_end - t_play,
    }
    return metrics, (openings(conversations), transcripts(conversations), returns)


def episode_stats(conversations: Sequence[Conversation]) -> dict[str, float]:
    """Success rate, turns and policy tokens per episode."""
    return {
        "episode/success_rate": statistics.fmean(bool(c.info.get("success")) for c in conversations),
        "episode/turns": statistics.fmean(len(c.rewards) for c in conversations),
        "episode/policy_tokens": statistics.fmean(sum(c.policy_mask) for c in conversations),
    }


def openings(conversations: Sequence[Conversation]) -> list[str]:
    return [c.messages[0]["content"] for c in conversations]


def transcripts(conversations: Sequence[Conversation]) -> list[str]:
    """Each conversation after its opening, one ``role: text`` line per turn."""
    return ["\n".join(f"{m['role']}: {m['content']}" for m in c.messages[1:]) for c in conversations]


def play_evaluation(cfg: DialogueConfig, policy: PreTrainedModel, renderer: TurnRenderer,
                    episodes: int) -> list[Conversation]:
    """``episodes`` held-out episodes (``env.eval_kwargs``), with seeds no training step uses."""
    kwargs = {**cfg.env.kwargs, **cfg.env.eval_kwargs}
    generator = seeds.generator(cfg.seed, "evaluate", device=policy.device)
    out: list[Conversation] = []
    for first in range(0, episodes, cfg.eval.batch):
        count = min(cfg.eval.batch, episodes - first)
        envs = [make_env(cfg.env.id, kwargs) for _ in range(count)]
        reset_seeds = [seeds.derive_seed(cfg.seed, "eval_episodes", first + i) for i in range(count)]
        out += run_conversations(policy, renderer, envs, reset_seeds, [None] * count,
                                 SamplingConfig(**cfg.sampling.model_dump()), generator, cfg.env.max_context)
    return out


def summarise_episodes(conversations: Sequence[Conversation]) -> dict[str, float]:
    returns = [c.episode_return for c in conversations]
    return {"episodes": float(len(conversations)), "mean_return": statistics.fmean(returns),
            **{k.split("/")[1]: v for k, v in episode_stats(conversations).items()}}


def evaluate_phase(run: DialogueRun, logger: RunLogger, phase: str, step: int) -> None:
    """Play the held-out episodes before or after training; record them and their summary."""
    cfg = run.config
    if cfg.eval.episodes == 0:
        return
    with merged_lora(run.policy) as snapshot:
        conversations = play_evaluation(cfg, snapshot, run.renderer, cfg.eval.episodes)
    logger.log_eval_samples(phase, step, openings(conversations), transcripts(conversations),
                            [c.episode_return for c in conversations], held_out=bool(cfg.env.eval_kwargs))
    path = logger.run_dir / EVALUATION_FILE
    results = json.loads(path.read_text()) if path.exists() else {}
    results[phase] = summarise_episodes(conversations)
    atomic_write_json(path, results)


def summarise_dialogue(run_dir: Path) -> dict[str, Any]:
    """The evaluation before/after and the lines the command line prints."""
    path = Path(run_dir) / EVALUATION_FILE
    results = json.loads(path.read_text()) if path.exists() else {}
    lines = [f"{phase}: success rate {r['success_rate']:.3f}, mean return {r['mean_return']:.3f}, "
             f"{r['turns']:.2f} turns per episode ({int(r['episodes'])} held-out episodes)"
             for phase, r in results.items()]
    return {**results, "headline": lines or ["no evaluation episodes (eval.episodes: 0)"]}


def write_dialogue_report(run_dir: Path) -> Path:
    """The LM report (reward, KL, before/after dialogues) with the episodes section added."""
    path = write_report(Path(run_dir))
    append_dialogue_report(Path(run_dir))
    return path


def append_dialogue_report(run_dir: Path) -> None:
    """Add the before/after evaluation and the success rate over training to ``report.md``."""
    summary = summarise_dialogue(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl", missing_ok=True)
    every = max(1, len(rows) // 10)
    lines = ["", "## Episodes", "", *[f"- {line}" for line in summary["headline"]], "",
             "| step | success rate | turns | mean return | kl/ref |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['episode/success_rate']:.3f} | {r['episode/turns']:.2f} | "
              f"{r['reward/mean']:.3f} | {r['kl/ref']:.3f} |" for r in rows[::every]]
    report = run_dir / "report.md"
    report.write_text(report.read_text(encoding="utf-8") + "\n".join(lines) + "\n", encoding="utf-8")


EXPERT = "expert"  # `langrl eval --model expert`: the environment's own expert policy instead of an LM


def play_expert(cfg: DialogueConfig, episodes: int, held_out: bool = True) -> list[Conversation]:
    """The held-out episodes of `play_evaluation` (same environments and seeds) played by the environment's
    ``expert_policy()``: a callable from each user message to the next utterance (Twenty Questions: the greedy
    questioner that knows every object's attributes, never the target; the help desk: the scripted expert that
    knows every goal's fix). ``held_out=False``: episodes of the training environment (``env.kwargs``), with
    seeds of their own."""
    kwargs = {**cfg.env.kwargs, **cfg.env.eval_kwargs} if held_out else dict(cfg.env.kwargs)
    stream = "eval_episodes" if held_out else "feedback_episodes"
    out = []
    for i in range(episodes):
        env = make_env(cfg.env.id, kwargs)
        make_expert = getattr(env.unwrapped, "expert_policy", None)
        if make_expert is None:
            raise ConfigError(f"--model {EXPERT}: env.id={cfg.env.id} has no expert policy (expert_policy()); "
                              f"pass a model name or a run folder")
        message, info = env.reset(seed=seeds.derive_seed(cfg.seed, stream, i))
        expert, c = make_expert(), Conversation(opening=[], messages=[{"role": "user", "content": message}])
        while not c.done:
            text = expert(message)
            message, reward, terminated, truncated, info = env.step(text)
            c.messages += [{"role": "assistant", "content": text}, {"role": "user", "content": str(message)}]
            c.rewards.append(float(reward))
            c.info, c.done = dict(info), terminated or truncated
        out.append(c)
    return out


def episode_kls(policy: PreTrainedModel, reference: Reference, conversations: Sequence[Conversation],
                sampling: SamplingConfig, pad_id: int, batch: int) -> list[float]:
    """Each episode's KL to the reference on the policy's tokens alone: the sum over them of log pi - log pi_ref
    at the sampled tokens (k1, at the sampling temperature), whose mean over episodes estimates
    KL(pi || pi_ref) per episode without bias."""
    out: list[float] = []
    for first in range(0, len(conversations), batch):
        chunk = conversations[first:first + batch]
        rollout = as_rollout(chunk, pad_id, policy.device)
        scored = make_batch(policy, reference, rollout, [c.episode_return for c in chunk], "k1", sampling)
        out += sequence_kl(scored.kl_tokens, scored.completion_mask).tolist()
    return out


def kl_to_config_model(config: DialogueConfig, model: str, lm: LM, conversations: Sequence[Conversation]) -> float:
    """Mean KL per episode of ``model``'s held-out episodes to ``config.model`` (0 when it is that model)."""
    if model == config.model:
        return 0.0
    base = load_lm(config.model, dtype=config.dtype, device=config.device, seed=config.seed)
    reference = Reference(base.model, use_adapter=False, copy_weights=False)
    sampling = SamplingConfig(**config.sampling.model_dump())
    return statistics.fmean(episode_kls(lm.model, reference, conversations, sampling, lm.tokenizer.pad_token_id,
                                        config.eval.batch))


def evaluate_kind(config: DialogueConfig, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: dialogue``: held-out episodes with ``model`` as the policy (``expert``: the
    environment's expert policy, where it has one)."""
    count = episodes or config.eval.episodes
    kl: dict[str, float] = {}
    if model == EXPERT:
        conversations = play_expert(config, count)
    else:
        lm = load_lm(newest_checkpoint(model), dtype=config.dtype, device=config.device, seed=config.seed)
        renderer = TurnRenderer(lm.tokenizer, config.env.system, config.env.chat)
        conversations = play_evaluation(config, lm.model, renderer, count)
        kl = {"kl_ref": kl_to_config_model(config, model, lm, conversations)}
    return {"model": model, "env": config.env.id, **summarise_episodes(conversations), **kl,
            "samples": [{"opening": o, "dialogue": t, "return": c.episode_return}
                        for o, t, c in zip(openings(conversations)[:4], transcripts(conversations)[:4],
                                           conversations[:4], strict=True)]}
