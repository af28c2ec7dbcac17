"""RL for LMs on prompts: config -> models -> rollout -> reward -> KL -> advantage -> update -> harness.

Everything random is a function of (seed, stream, step) (`langrl.run.seeds`): the prompts of step s and
its sampling generator are derived from them, so a run resumed from the checkpoint at step k reproduces
the uninterrupted run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.config import Config, load_config
from langrl.distributed import learners
from langrl.envs.prompts import PromptSet, build_prompt_sets
from langrl.envs.text.core import PromptTask
from langrl.errors import ConfigError
from langrl.lm.algorithms import Algorithm, Batch, build_algorithm
from langrl.lm.bayes_monitor import ExactMonitor, sample_estimates
from langrl.lm.collect import Collector, LocalCollector, StepSamples, rollout_prompts
from langrl.models import Reference, apply_lora
from langrl.models.forward import completion_logits, token_logprobs
from langrl.report.lm import summarise_run, write_report
from langrl.rewards import RewardFn, build_reward, check_columns, score
from langrl.rl.kl import KL_ESTIMATORS, kl_exact, sequence_kl
from langrl.rollout import SamplingConfig, TokenRollout
from langrl.run import parallel, seeds
from langrl.run.callbacks import Callback
from langrl.run.harness import Checkpointed, RunHarness, TrainResult, guarded_step, resolve_run_dir, run_name
from langrl.run.io import atomic_write_json
from langrl.run.logger import RunLogger
from langrl.run.optim import build_optimizer, freeze, set_lr, trainable
from langrl.run.runtime import load_run_lm


@dataclass
class Run:
    """The live objects of one training run."""

    config: Config
    policy: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    reference: Reference
    optimizer: torch.optim.Optimizer
    algorithm: Algorithm
    task: PromptTask
    sampling: SamplingConfig
    eval_prompts: PromptSet  # the held-out prompts, or the training prompts when none are held out
    monitor: ExactMonitor | None = None
    updates: int = 0  # optimizer updates applied: the version of the weights

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device


def train(config: Config | dict[str, Any] | str | Path, output: str | Path | None = None,
          resume: bool = False, overrides: list[str] | tuple[str, ...] = (),
          allow_config_change: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a policy on prompts as ``config`` (``kind: lm``) says; return the run folder and final metrics.
    ``callbacks`` see every step and may stop the run early (`langrl.run.callbacks`).

    ``config`` is a :class:`Config`, a dict, or a YAML path. Without ``output`` the run goes to
    ``runs/<config name>-<timestamp>``; with ``resume`` (and no ``output``) the newest such folder is
    continued from its last intact checkpoint. `langrl.train` takes every kind of config.
    """
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    run_dir = resolve_run_dir(run_name(config, "run"), output, resume)
    group = parallel.current()
    if cfg.distributed.learners > 1 and group is None:  # start the learners; each comes back here
        return learners.fit("langrl.lm.trainer:train", cfg.model_dump(mode="json"), cfg.distributed,
                            cfg.threads or max(1, int(cfg.distributed.cpus_per_learner)), run_dir, resume,
                            allow_config_change, callbacks)
    run = build_run(cfg)
    if group is not None and group.rank > 0:
        follower = learners.FollowerHarness(learners.share_start(run, 0))
        run.updates = follower.start
        with closing(build_collector(run)) as collector:
            last = train_steps(run, cast(RunHarness, follower), collector)
        return TrainResult(run_dir=run_dir, metrics=last, summary={})
    parts = Checkpointed(run.policy, run.tokenizer, run.optimizer, run.algorithm.modules())
    with RunHarness(run_dir, cfg, cfg.log, parts, allow_config_change, callbacks) as harness:
        if resume:
            run.algorithm.load_state_dict(harness.restore().get("algorithm", {}))
        harness.start = run.updates = learners.share_start(run, harness.start)
        with closing(build_collector(run)) as collector:
            last = train_steps(run, harness, collector)
    write_report(run_dir)
    summary = summarise_run(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summary)


def train_steps(run: Run, harness: RunHarness, collector: Collector) -> dict[str, float]:
    """Steps ``harness.start + 1 .. steps`` with their logs and checkpoints; returns the last metrics."""
    cfg, run_dir = run.config, harness.run_dir
    last: dict[str, float] = {}
    with harness.session(total=cfg.steps, desc="train") as logger:
        writes = harness.writes  # the data-parallel learners besides the first compute and write nothing else
        if run.monitor is not None and writes:
            atomic_write_json(run_dir / "frontier.json", run.monitor.curves(run.policy, run.reference))
        if harness.start == 0 and writes:
            log_eval_samples(run, logger, "before", 0)
        submitted: int | None = None
        evaluated: dict[int, HeldOut | None] = {}  # the held-out samples eval.every drew at the latest step
        step = harness.start
        for step in harness.steps(cfg.steps):
            t0 = time.perf_counter()
            if submitted != step:
                submit(run, collector, step)
            samples, extra = receive(run, collector, step)
            if cfg.distributed.overlap and step < cfg.steps:  # sampled while this step updates
                submitted = submit(run, collector, step + 1)
            last = guarded_step(step, train_step, run, step, samples, t0,
                                fix="lower optim.lr or check the reward") | extra
            if writes and evaluation_due(cfg, step):
                held_out = held_out_samples(run, with_kl=True)
                evaluated = {step: held_out}
                last |= held_out.metrics() if held_out is not None else {}
            harness.log(logger, step, last)
            harness.stop_requested = parallel.any_rank(harness.stop_requested)
            if step == 1 or step % cfg.log.sample_every == 0:
                logger.log_samples(step, samples.prompts, samples.completions, samples.rewards)
            if harness.due(step, cfg.steps):
                harness.parts.modules = run.algorithm.modules()  # DPG swaps its proposal for a new module
                harness.checkpoint(step, {"algorithm": run.algorithm.state_dict()})
            harness.advance(reward=last["reward/mean"], kl=last["kl/ref"])
        if writes:
            # the last step's evaluation drew the same samples from the same weights: reuse them
            log_eval_samples(run, logger, "after", cfg.steps, evaluated.get(step))
    return last


def evaluation_due(cfg: Config, step: int) -> bool:
    """``eval.every`` evaluates every that many steps and at the last one."""
    return cfg.eval.every > 0 and (step % cfg.eval.every == 0 or step == cfg.steps)


def submit(run: Run, collector: Collector, step: int) -> int:
    """Start collecting ``step``'s samples with the current weights (``step - 1`` updates when in order)."""
    collector.submit(step, run.task.for_step(step - 1), run.updates)
    return step


def receive(run: Run, collector: Collector, step: int) -> tuple[StepSamples, dict[str, float]]:
    """``step``'s samples; a batch staler than ``distributed.max_staleness`` updates is sampled again with the
    current weights. With ``distributed.overlap`` also the staleness (in updates) and the rejections."""
    dist = run.config.distributed
    samples, rejected = collector.result(step), 0
    while run.updates - samples.version > dist.max_staleness:
        rejected += 1
        submit(run, collector, step)
        samples = collector.result(step)
    extra = {"rollout/staleness": float(run.updates - samples.version), "rollout/rejected": float(rejected)}
    return samples, extra if dist.overlap else {}


def build_collector(run: Run) -> Collector:
    """Where the run's samples come from: Ray rollout workers, or the learner's own process."""
    dist = run.config.distributed
    if dist.remote:
        from langrl.distributed.ray_rollouts import RayCollector

        return RayCollector(run, dist, builder="langrl.lm.trainer:build_run")
    return LocalCollector(run, dist.shard_count)  # data-parallel learners: each samples its shards


def build_run(cfg: Config) -> Run:
    """Load the model, the reference, LoRA, the algorithm, optimizer, reward and prompts."""
    lm = load_run_lm(cfg)
    use_adapter = cfg.lora is not None and cfg.kl.reference != "copy"
    # Built even when kl.coef = 0: kl/ref is always logged. Copies are taken before LoRA changes the model.
    reference = Reference(lm.model, use_adapter=use_adapter)
    separate_critic = cfg.algorithm in ("a2c", "ppo") and cfg.actor_critic.critic == "separate"
    critic = copy.deepcopy(lm.model).train() if separate_critic else None
    policy: PreTrainedModel = lm.model
    if cfg.lora is not None:
        peft = apply_lora(policy, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
        policy = cast(PreTrainedModel, peft)  # a PeftModel forwards as the model it wraps
    freeze(policy, cfg.train.freeze)
    policy.eval()
    algorithm = build_algorithm(cfg, policy, critic)
    optimizer = build_optimizer(trainable(policy, algorithm.modules()), cfg.optim)
    reward = build_reward(cfg.reward)
    prompts, eval_prompts = build_prompt_sets(cfg.prompts, lm.tokenizer, cfg.seed)
    for prompt_set in (prompts, eval_prompts):  # a column the reward needs is missing: say so before step 1
        check_columns(reward, list(prompt_set.columns))
    sampling = SamplingConfig(**cfg.sampling.model_dump())
    return Run(config=cfg, policy=policy, tokenizer=lm.tokenizer, reference=reference, optimizer=optimizer,
               algorithm=algorithm, task=PromptTask(prompts, reward), sampling=sampling, eval_prompts=eval_prompts,
               monitor=exact_monitor(cfg, lm.tokenizer, prompts, reward) if cfg.bayes.exact else None)


def exact_monitor(cfg: Config, tokenizer: PreTrainedTokenizerBase, prompts: PromptSet,
                  reward: RewardFn) -> ExactMonitor:
    """The exact comparison with pi*: one prompt, fixed-length completions (a model without EOS)."""
    if len(prompts.texts) != 1:
        raise ConfigError(f"bayes.exact needs exactly one prompt, got {len(prompts.texts)}; "
                          "use prompts.items with a single item")
    if tokenizer.eos_token_id is not None:
        raise ConfigError("bayes.exact needs completions of one fixed length: a model without an EOS token, "
                          "such as model: toy")
    return ExactMonitor(prompts.ids[0], prompts.texts[0], tokenizer, cfg.sampling.max_new_tokens, reward,
                        cfg.sampling.temperature)


def run_step(run: Run, step: int) -> dict[str, float]:
    """One whole training step in the learner's process, sampling included (benchmarks, notebooks)."""
    t0 = time.perf_counter()
    collector = LocalCollector(run, run.config.distributed.shard_count)
    submit(run, collector, step)
    return train_step(run, step, collector.result(step), t0)


def train_step(run: Run, step: int, samples: StepSamples, t0: float) -> dict[str, float]:
    """Compute the KL of ``samples`` to the reference and update; return the step's metrics (the step
    started at ``t0``, before its samples were collected)."""
    cfg = run.config
    rollout = samples.rollout
    t_collected = time.perf_counter()
    batch = make_batch(run.policy, run.reference, rollout, samples.rewards, cfg.kl.estimator, run.sampling, step)
    batch.prefix_rewards = samples.prefix
    t_ref = time.perf_counter()
    set_lr(run.optimizer, cfg.optim, step, cfg.steps)
    update = run.algorithm.update(run.policy, run.optimizer, batch)
    update.update(run.algorithm.after_update(batch))
    run.updates += 1
    t_end = time.perf_counter()
    reward_t = batch.rewards
    lengths = rollout.completion_mask.sum(-1).float()
    metrics = {
        "reward/mean": float(reward_t.mean()),
        "reward/std": float(reward_t.std()) if len(reward_t) > 1 else 0.0,
        "kl/ref": float(sequence_kl(batch.kl_tokens, batch.completion_mask).mean()),
        **update,
        "completion/length": float(lengths.mean()),
        "lr": run.optimizer.param_groups[0]["lr"],
        "time/step_s": t_end - t0,
        "time/rollout_s": t_collected - t0,
        "time/sample_s": samples.sample_s,
        "time/reward_s": samples.reward_s,
        "time/sync_s": samples.sync_s,
        "time/reference_s": t_ref - t_collected,
        "time/update_s": t_end - t_ref,
        "samples/per_s": len(reward_t) / (t_end - t0),
        **bayes_metrics(run, batch),
    }
    return metrics


def bayes_metrics(run: Run, batch: Batch) -> dict[str, float]:
    """``bayes/...``: exact comparison with pi* (toy tasks) and importance-sampling estimates."""
    out: dict[str, float] = {}
    beta = run.algorithm.kl_coef
    if run.config.bayes.estimates and beta > 0:
        mask = batch.completion_mask
        out.update(sample_estimates((batch.old_logprobs * mask).sum(-1), (batch.ref_logprobs * mask).sum(-1),
                                    batch.rewards, beta))
    if run.monitor is not None:
        out.update(run.monitor(run.policy, run.reference, beta))
    return out


def make_batch(policy: PreTrainedModel, reference: Reference, rollout: TokenRollout, rewards: list[float],
               estimator: str, sampling: SamplingConfig, step: int = 0) -> Batch:
    """Reference log-probs and per-token KL at sampling time, packed with the rollout."""
    tc = rollout.completion_ids.size(1)
    temperature = sampling.temperature
    ref_logits = reference.logits(policy, rollout.input_ids, rollout.attention_mask, tc, temperature)
    ref_logp = token_logprobs(ref_logits, rollout.completion_ids)
    if estimator == "exact":
        # The exact KL needs the policy's full distribution, which sampling did not keep: one no-grad pass.
        with torch.inference_mode():
            logits = completion_logits(policy, rollout.input_ids, rollout.attention_mask, tc, temperature)
            kl_tokens = kl_exact(logits, ref_logits)
    else:
        kl_tokens = KL_ESTIMATORS[estimator](rollout.logprobs, ref_logp)
    mask = rollout.completion_mask
    return Batch(
        input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
        completion_ids=rollout.completion_ids, completion_mask=mask,
        old_logprobs=rollout.logprobs, ref_logprobs=ref_logp * mask,
        rewards=torch.tensor(rewards, dtype=torch.float32, device=mask.device),
        group_size=sampling.group_size, kl_tokens=kl_tokens * mask, step=step, values=rollout.values,
        # clone: an inference-mode tensor cannot be saved for the backward of the exact KL loss.
        ref_logits=ref_logits.clone() if estimator == "exact" else None,
    )


@dataclass
class HeldOut:
    """Completions of the evaluation prompts with their rewards and KL to the reference."""

    prompts: list[str]
    completions: list[str]
    rewards: list[float]
    kls: list[float]

    def metrics(self) -> dict[str, float]:
        return {"eval/reward": sum(self.rewards) / len(self.rewards), "eval/kl": sum(self.kls) / len(self.kls)}


def held_out_samples(run: Run, with_kl: bool) -> HeldOut | None:
    """``prompts.eval_samples`` completions for each of the first ``prompts.eval_count`` evaluation prompts
    (held out, or else the training ones), always from the same seed, with each completion's reward and
    (``with_kl``; else 0) its KL to the reference. None when there are no evaluation prompts."""
    cfg = run.config
    prompt_set = run.eval_prompts
    count = min(cfg.prompts.eval_count, len(prompt_set.texts))
    if count == 0:
        return None
    sampling = SamplingConfig(**{**run.sampling.__dict__, "group_size": cfg.prompts.eval_samples})
    generator = seeds.generator(cfg.seed, "eval_samples", device=run.device)
    indices = list(range(count))
    rollout, prompts, completions = rollout_prompts(run.policy, run.tokenizer, prompt_set, indices, sampling,
                                                    generator)
    rewards = score(run.task.reward, prompts, completions, prompt_set.columns_for(indices, sampling.group_size))
    kls = [0.0] * len(rewards)
    if with_kl:
        batch = make_batch(run.policy, run.reference, rollout, rewards, "k1", sampling)
        kls = sequence_kl(batch.kl_tokens, batch.completion_mask).tolist()
    return HeldOut(prompts, completions, rewards, kls)


def log_eval_samples(run: Run, logger: RunLogger, phase: str, step: int, samples: HeldOut | None = None) -> None:
    """The held-out samples before or after training (``samples`` when already drawn at this step) to
    ``eval_samples.jsonl``. Before training the policy is the reference: KL 0."""
    samples = samples or held_out_samples(run, with_kl=phase == "after")
    if samples is not None:
        logger.log_eval_samples(phase, step, samples.prompts, samples.completions, samples.rewards, samples.kls,
                                held_out=run.config.prompts.holds_out)
