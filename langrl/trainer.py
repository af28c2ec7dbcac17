"""The training loop: config -> models -> rollout -> reward -> KL -> advantage -> update -> log/checkpoint.

Everything random is a function of (seed, step): the prompts of step s and the sampling generator of step
s are derived from them, so a run resumed from the checkpoint at step k reproduces the uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.algorithms import Algorithm, Batch, build_algorithm
from langrl.algorithms.base import trainable
from langrl.bayes.monitor import ExactMonitor, sample_estimates
from langrl.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from langrl.config import Config, config_to_yaml, is_agent_config, load_config
from langrl.errors import ConfigError
from langrl.eval import RunLogger, summarise, write_report
from langrl.io import atomic_write_json, atomic_write_text, read_jsonl
from langrl.losses.kl import KL_ESTIMATORS, kl_exact, sequence_kl
from langrl.losses.logprobs import completion_logits, token_logprobs
from langrl.models import Reference, apply_lora, load_lm, merged_lora
from langrl.prompts import PromptSet, build_prompts, left_pad
from langrl.rewards import RewardFn, build_reward, score
from langrl.rollout import Rollout, SamplingConfig, sample
from langrl.runtime import reuse_freed_memory


@dataclass
class TrainResult:
    """What ``train`` returns: where the run lives and how it ended."""

    run_dir: Path
    metrics: dict[str, float]
    summary: dict[str, Any]


@dataclass
class Run:
    """The live objects of one training run."""

    config: Config
    policy: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    reference: Reference
    optimizer: torch.optim.Optimizer
    algorithm: Algorithm
    reward: RewardFn
    prompts: PromptSet
    sampling: SamplingConfig
    monitor: ExactMonitor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device


def train(config: Config | dict[str, Any] | str | Path | Any, output: str | Path | None = None,
          resume: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Train a policy as ``config`` says; return the run directory and the final metrics.

    ``config`` is a :class:`Config`, a dict, or a YAML path. Without ``output`` the run goes to
    ``runs/<config name>-<timestamp>``; with ``resume`` (and no ``output``) the newest such folder is
    continued from its last checkpoint. A config with an ``env`` section trains an LM agent in that
    environment instead (`langrl.agents.train_agent`).
    """
    if is_agent_config(config):
        from langrl.agents.lm_ppo import train_agent

        return train_agent(config, output=output, resume=resume, overrides=overrides)
    name = Path(config).stem if isinstance(config, (str, Path)) else "run"
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    run_dir = resolve_run_dir(name, output, resume)
    run = build_run(cfg)
    start = restore(run, run_dir) if resume else 0
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    if run.monitor is not None:
        atomic_write_json(run_dir / "frontier.json", run.monitor.curves(run.policy, run.reference))
    last: dict[str, float] = {}
    with RunLogger(run_dir, start_step=start, tensorboard=cfg.log.tensorboard) as logger:
        if start == 0:
            log_eval_samples(run, logger, "before", 0)
        bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not cfg.log.progress,
                   dynamic_ncols=True)
        for step in range(start + 1, cfg.steps + 1):
            last, texts = train_step(run, step)
            logger.log_metrics(step, last)
            if step == 1 or step % cfg.log.sample_every == 0:
                logger.log_samples(step, *texts)
            if step % cfg.log.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(run_dir, step, run.policy, run.tokenizer, run.optimizer,
                                {"algorithm": run.algorithm.state_dict()}, cfg.log.keep_checkpoints,
                                run.algorithm.modules())
            bar.set_postfix(reward=f"{last['reward/mean']:.3f}", kl=f"{last['kl/ref']:.3f}")
            bar.update(1)
        bar.close()
        log_eval_samples(run, logger, "after", cfg.steps)
    write_report(run_dir)
    summary = summarise(read_jsonl(run_dir / "metrics.jsonl"))
    return TrainResult(run_dir=run_dir, metrics=last, summary=summary)


def resolve_run_dir(name: str, output: str | Path | None, resume: bool) -> Path:
    """The run folder: ``output``, a new timestamped folder, or (resume) the newest earlier one."""
    if output is None:
        if resume:
            earlier = sorted(Path("runs").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
            if not earlier:
                raise ConfigError(f"--resume: no earlier run of {name!r} under runs/; pass --output DIR")
            return earlier[-1]
        return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(output)
    if not resume and ((run_dir / "metrics.jsonl").exists() or list_checkpoints(run_dir)):
        raise ConfigError(f"--output {str(run_dir)!r} already holds a run; pass --resume to continue it "
                          f"or choose another folder")
    return run_dir


def build_run(cfg: Config) -> Run:
    """Load the model, the reference, LoRA, the algorithm, optimizer, reward and prompts."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    if lm.model.device.type == "cpu":
        reuse_freed_memory()
    use_adapter = cfg.lora is not None and cfg.kl.reference != "copy"
    # Built even when kl.coef = 0: kl/ref is always logged. Copies are taken before LoRA changes the model.
    reference = Reference(lm.model, use_adapter=use_adapter)
    separate_critic = cfg.algorithm in ("a2c", "ppo") and cfg.actor_critic.critic == "separate"
    critic = copy.deepcopy(lm.model).train() if separate_critic else None
    policy: PreTrainedModel = lm.model
    if cfg.lora is not None:
        policy = apply_lora(policy, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
    freeze(policy, cfg.train.freeze)
    policy.eval()
    algorithm = build_algorithm(cfg, policy, critic)
    params = trainable(policy, algorithm.modules())
    # fused: one kernel per parameter group instead of a chain of foreach ops over all parameters; it
    # reads and writes the optimizer state once (faster on CPU and CUDA, see benchmarks/RESULTS.md).
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay,
                                  fused=params[0].device.type in ("cpu", "cuda") if params else None)
    reward = build_reward(cfg.reward)
    prompts = build_prompts(cfg.prompts, lm.tokenizer, cfg.seed)
    sampling = SamplingConfig(**cfg.sampling.model_dump())
    return Run(config=cfg, policy=policy, tokenizer=lm.tokenizer, reference=reference, optimizer=optimizer,
               algorithm=algorithm, reward=reward, prompts=prompts, sampling=sampling,
               monitor=exact_monitor(cfg, lm.tokenizer, prompts, reward) if cfg.bayes.exact else None)


def freeze(model: PreTrainedModel, patterns: list[str]) -> None:
    """Stop gradients to every parameter whose name contains one of ``patterns``."""
    if not patterns:
        return
    names = [name for name, _ in model.named_parameters()]
    unmatched = [p for p in patterns if not any(p in name for name in names)]
    if unmatched:
        raise ConfigError(f"train.freeze = {unmatched}: no parameter name contains it "
                          f"(names look like {names[0]!r})")
    for name, param in model.named_parameters():
        if any(p in name for p in patterns):
            param.requires_grad_(False)


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


def restore(run: Run, run_dir: Path) -> int:
    """Load the newest checkpoint of ``run_dir`` into ``run``; return its step (0 when there is none)."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        return 0
    state = load_checkpoint(checkpoints[-1], run.policy, run.optimizer, run.algorithm.modules())
    run.algorithm.load_state_dict(state.get("algorithm", {}))
    return int(state["step"])


def step_generator(run: Run, step: int) -> torch.Generator:
    """The sampling RNG of ``step``: a pure function of (seed, step), so resumed runs draw the same."""
    return torch.Generator(device=run.device).manual_seed(run.config.seed * 1_000_003 + step)


def rollout_prompts(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: PromptSet,
                    indices: list[int], sampling: SamplingConfig, generator: torch.Generator,
                    value_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    ) -> tuple[Rollout, list[str], list[str]]:
    """Sample completions for the prompts ``indices``; return the rollout, prompt texts and completions.

    With LoRA the adapter is folded into the weights while sampling (decoding through it is ~2x slower).
    """
    device = next(policy.parameters()).device
    ids, mask = left_pad([prompts.ids[i] for i in indices], tokenizer.pad_token_id, device)
    with merged_lora(policy) as snapshot:
        rollout = sample(snapshot, ids, mask, sampling, tokenizer.eos_token_id, tokenizer.pad_token_id,
                         generator, value_head)
    completions = decode_completions(tokenizer, rollout)
    texts = [prompts.texts[i] for i in indices for _ in range(sampling.group_size)]
    return rollout, texts, completions


def decode_completions(tokenizer: PreTrainedTokenizerBase, rollout: Rollout) -> list[str]:
    """The text of each completion: its sampled tokens up to, not including, the EOS that ended it.

    Padding is cut by the mask rather than by ``skip_special_tokens``, which would also delete tokens
    that the model really wrote (e.g. the toy model's letter ``a``, which doubles as its pad token).
    """
    eos = tokenizer.eos_token_id
    texts = []
    for ids, length in zip(rollout.completion_ids.tolist(), rollout.completion_mask.sum(-1).tolist(),
                           strict=True):
        ids = ids[:int(length)]
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        texts.append(tokenizer.decode(ids))
    return texts


def train_step(run: Run, step: int) -> tuple[dict[str, float], tuple[list[str], list[str], list[float]]]:
    """Sample, score, compute the KL to the reference, update. Returns metrics and (prompts, completions,
    rewards) for logging."""
    cfg = run.config
    t0 = time.perf_counter()
    rollout, prompts, completions = rollout_prompts(run.algorithm.behaviour(run.policy), run.tokenizer,
                                                    run.prompts, run.prompts.for_step(step - 1),
                                                    run.sampling, step_generator(run, step),
                                                    run.algorithm.value_head)
    t_sample = time.perf_counter()
    rewards = score(run.reward, prompts, completions)
    t_reward = time.perf_counter()
    batch = make_batch(run.policy, run.reference, rollout, rewards, cfg.kl.estimator, run.sampling, step)
    t_ref = time.perf_counter()
    for group in run.optimizer.param_groups:
        group["lr"] = cfg.optim.lr * lr_factor(step, cfg.steps, cfg.optim.warmup_steps, cfg.optim.schedule)
    update = run.algorithm.update(run.policy, run.optimizer, batch)
    update.update(run.algorithm.after_update(batch))
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
        "time/sample_s": t_sample - t0,
        "time/reward_s": t_reward - t_sample,
        "time/reference_s": t_ref - t_reward,
        "time/update_s": t_end - t_ref,
        "samples/per_s": len(reward_t) / (t_end - t0),
        **bayes_metrics(run, batch),
    }
    return metrics, (prompts, completions, rewards)


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


def lr_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier at ``step`` (1-based): linear warm-up, then constant or decayed so that
    the last step still moves (decay reaches 0 one step after the end), as in HF Trainer / TRL."""
    if step <= warmup:
        return step / warmup
    progress = (step - warmup) / max(1, steps - warmup + 1)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def make_batch(policy: PreTrainedModel, reference: Reference, rollout: Rollout, rewards: list[float],
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


def log_eval_samples(run: Run, logger: RunLogger, phase: str, step: int) -> None:
    """Sample the first ``prompts.eval_count`` prompts with a fixed seed, before or after training."""
    count = min(run.config.prompts.eval_count, len(run.prompts.texts))
    if count == 0:
        return
    sampling = SamplingConfig(**{**run.sampling.__dict__, "group_size": 1})
    generator = torch.Generator(device=run.device).manual_seed(run.config.seed + 12345)
    _, prompts, completions = rollout_prompts(run.policy, run.tokenizer, run.prompts, list(range(count)),
                                              sampling, generator)
    logger.log_eval_samples(phase, step, prompts, completions, score(run.reward, prompts, completions))
