"""Evaluate a policy on a config's task: mean reward and KL to the config's model (the reference)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from langrl.config import Config, load_config
from langrl.envs.prompts import build_prompt_sets
from langrl.eval.metrics import text_metrics
from langrl.lm.collect import rollout_prompts
from langrl.lm.trainer import make_batch
from langrl.models import Reference, load_lm
from langrl.rewards import build_reward, check_columns, score
from langrl.rl.kl import sequence_kl
from langrl.rollout import SamplingConfig
from langrl.run import seeds
from langrl.run.checkpoint import newest_checkpoint


def evaluate_kind(config: Config, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: lm`` (``episodes`` does not apply); ``model`` may be a run folder."""
    return evaluate_lm(config, newest_checkpoint(model), num_prompts)


def evaluate_lm(config: Config | dict[str, Any] | str | Path, model: str, num_prompts: int = 16,
                overrides: list[str] | tuple[str, ...] = (), samples_shown: int = 8) -> dict[str, Any]:
    """Sample ``sampling.group_size`` completions for the first ``num_prompts`` evaluation prompts of the config
    (the held-out ones when it holds some out, else the training prompts) with ``model`` as the policy; score
    them with the config's reward (given each prompt's row columns) and the KL to ``config.model``.

    Returns ``reward/mean``, ``reward/std``, ``kl/ref`` (mean per-sequence KL, nats), the completions' text
    metrics when there are two or more (``text/distinct_1``, ``distinct_2``, ``self_bleu``, ``repetition_rate``,
    ``mean_length``: see `langrl.eval.metrics`) and ``text/perplexity_ref`` (per token, under the config's
    model, given the very prompt tokens sampled from: from the log-probs the KL pass already has), and some
    samples.
    """
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    policy = load_lm(model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    reference_lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    reference = Reference(reference_lm.model, use_adapter=False, copy_weights=False)
    prompts = build_prompt_sets(cfg.prompts, policy.tokenizer, cfg.seed)[1]
    sampling = SamplingConfig(**cfg.sampling.model_dump())
    reward = build_reward(cfg.reward)
    check_columns(reward, list(prompts.columns))
    device = next(policy.model.parameters()).device
    generator = seeds.generator(cfg.seed, "evaluate", device=device)
    indices = list(range(min(num_prompts, len(prompts.texts))))
    rows: list[dict[str, Any]] = []
    rewards_all: list[float] = []
    kls: list[torch.Tensor] = []
    nll, tokens = 0.0, 0.0  # the reference's negative log-likelihood of the sampled tokens
    for start in range(0, len(indices), cfg.prompts.per_step):
        chunk = indices[start:start + cfg.prompts.per_step]
        rollout, texts, completions = rollout_prompts(policy.model, policy.tokenizer, prompts, chunk,
                                                      sampling, generator)
        rewards = score(reward, texts, completions, prompts.columns_for(chunk, sampling.group_size))
        batch = make_batch(policy.model, reference, rollout, rewards, cfg.kl.estimator, sampling)
        kls.append(sequence_kl(batch.kl_tokens, batch.completion_mask))
        nll -= float(batch.ref_logprobs.sum())  # already zero past each completion's end
        tokens += float(batch.completion_mask.sum())
        rewards_all += rewards
        rows += [{"prompt": p, "completion": c, "reward": r} for p, c, r in zip(texts, completions, rewards,
                                                                                strict=True)]
    reward_t = torch.tensor(rewards_all)
    completions = [r["completion"] for r in rows]
    return {
        "model": model,
        "reference": cfg.model,
        "prompts": len(indices),
        "completions": len(rewards_all),
        "reward/mean": float(reward_t.mean()),
        "reward/std": float(reward_t.std()) if len(reward_t) > 1 else 0.0,
        "kl/ref": float(torch.cat(kls).mean()),
        **({f"text/{k}": v for k, v in text_metrics(completions).items()} if len(completions) > 1 else {}),
        "text/perplexity_ref": math.exp(nll / max(tokens, 1.0)),
        "samples": rows[:samples_shown],
    }
