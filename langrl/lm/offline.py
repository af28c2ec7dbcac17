"""Offline learning of an LM from scored texts (``kind: offline``): ILQL, filtered BC and RWR.

config -> models (+ Q/V heads) -> dataset (read, or sampled once from the base model) -> seeded
minibatches -> loss -> update (-> Polyak targets) -> harness. Nothing is sampled while training; the
policy is decoded only before and after, on the evaluation prompts, to log ``reward/mean`` and
``kl/ref`` (a row at step 0, and one more at the last step) and the before/after samples.

- ``ilql``: twin Q heads, their Polyak targets and an expectile V head on the LM's final hidden states
  (``ilql.trunk: shared``: the LM trains with them and its LM head, under an AWAC-weighted or plain NLL,
  is pi_beta; ``separate``: pi_beta is the frozen base model and the heads sit on a trained copy). The
  losses are `langrl.rl.ilql`'s; decoding uses ``log pi_beta + decode.beta (Q - V)``.
- ``filtered_bc``: NLL on the rows whose reward is in the top ``filtered_bc.fraction``.
- ``rwr``: NLL weighted by N softmax(R / ``rwr.temperature``).

Minibatch rows are a pure function of (seed, step) (`langrl.lm.offline_data.step_rows`), so a run
resumed from its checkpoint at step k logs what the uninterrupted run logs.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.config.offline import OfflineConfig, offline_config_from_data
from langrl.envs.prompts import encode
from langrl.errors import ConfigError
from langrl.lm.offline_data import (
    Minibatch,
    OfflineData,
    collate,
    encode_prompts,
    generate_rows,
    read_rows,
    split_prompts,
    step_rows,
    tokenize_rows,
)
from langrl.lm.offline_decode import ShapedPolicy, evaluate_policy
from langrl.models import load_lm
from langrl.models.forward import completion_forward, completion_logits, token_logprobs
from langrl.models.value import MLPValueHead, QHeads
from langrl.report import write_report
from langrl.report.lm import summarise_run
from langrl.rewards import RewardFn, build_reward
from langrl.rl import ilql
from langrl.rl.returns import token_discounts
from langrl.run import seeds
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import list_checkpoints, load_tensors
from langrl.run.harness import Checkpointed, RunHarness, TrainResult, guarded_step
from langrl.run.io import atomic_write_jsonl
from langrl.run.logger import RunLogger
from langrl.run.optim import build_optimizer, freeze, minibatch_epochs, set_lr, trainable
from langrl.run.runtime import load_run_lm

log = logging.getLogger("langrl")
DATASET_FILE = "dataset.jsonl"  # a generated dataset, kept in the run folder


@dataclass
class OfflineRun:
    """The live objects of one offline run. ``model`` is the network that trains (the LM, or the critic
    trunk with ``ilql.trunk: separate``); ``base`` is the frozen base model (pi_beta of a separate trunk,
    the reference of ``kl/ref``)."""

    config: OfflineConfig
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    base: PreTrainedModel
    heads: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    reward: RewardFn | None
    train_prompts: list[str] = field(default_factory=list)
    eval_prompts: list[str] = field(default_factory=list)
    data: OfflineData | None = None
    pool: list[int] = field(default_factory=list)  # the rows this algorithm trains on
    weights: torch.Tensor = field(default_factory=lambda: torch.ones(0))  # (N,) per-row loss weights

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def separate(self) -> bool:
        return self.config.algorithm == "ilql" and self.config.ilql.trunk == "separate"

    def policy(self) -> ShapedPolicy:
        """The decoding policy with the current weights and ``decode`` settings."""
        return decoding_policy(self.config, self.base if self.separate else self.model, self.heads,
                               self.model if self.separate else None)


def decoding_policy(cfg: OfflineConfig, lm: PreTrainedModel, heads: dict[str, nn.Module],
                    critic: PreTrainedModel | None) -> ShapedPolicy:
    d = cfg.decode
    q, v = heads.get("q_target"), heads.get("v")
    return ShapedPolicy(lm=lm, q=cast(QHeads | None, q), v=cast(MLPValueHead | None, v), critic=critic,
                        beta=d.beta, temperature=d.temperature, top_k=d.top_k, greedy=d.greedy)


def build_heads(cfg: OfflineConfig, model: PreTrainedModel, base: PreTrainedModel) -> dict[str, nn.Module]:
    """ILQL's online Q heads, their target copy and the V head (float32, on the model's device); the Q heads
    act through a frozen copy of the base model's output embedding."""
    if cfg.algorithm != "ilql":
        return {}
    hidden = model.config.hidden_size
    embeddings = cast(torch.Tensor, base.get_output_embeddings().weight).detach()
    device = next(model.parameters()).device
    q = QHeads(hidden, embeddings, cfg.ilql.heads).to(device)
    target = copy.deepcopy(q).requires_grad_(False)
    target.embeddings = q.embeddings  # one copy of the vocabulary-sized buffer
    return {"q": q, "q_target": target, "v": MLPValueHead(hidden).to(device)}


def build_run(cfg: OfflineConfig) -> OfflineRun:
    """Load the base model, the trained network and its heads, the optimizer, the reward and the prompts."""
    lm = load_run_lm(cfg)
    base = copy.deepcopy(lm.model).eval().requires_grad_(False)
    model = lm.model
    freeze(model, cfg.train.freeze)
    model.eval()  # no dropout: the losses are regressions
    heads = build_heads(cfg, model, base)
    optimizer = build_optimizer(trainable(model, {k: m for k, m in heads.items() if k != "q_target"}), cfg.optim)
    train_prompts, eval_prompts = split_prompts(cfg.prompts, cfg.seed) if cfg.prompts else ([], [])
    return OfflineRun(config=cfg, model=model, tokenizer=lm.tokenizer, base=base, heads=heads, optimizer=optimizer,
                      reward=build_reward(cfg.reward) if cfg.reward is not None else None,
                      train_prompts=train_prompts, eval_prompts=eval_prompts)


def load_data(run: OfflineRun, run_dir: Path) -> None:
    """Read (or, the first time, generate into the run folder) the dataset; tokenise it; pick the rows and
    weights the algorithm trains with."""
    cfg = run.config
    if cfg.dataset.path is not None:
        rows = read_rows(cfg.dataset.path)
    else:
        file = run_dir / DATASET_FILE
        if not file.exists():
            assert cfg.prompts is not None and run.reward is not None  # checked by the config
            atomic_write_jsonl(file, generate_rows(run.base, run.tokenizer, run.train_prompts, cfg.prompts.chat,
                                                   cfg, run.reward))
        rows = read_rows(str(file))
    data = tokenize_rows(rows, run.tokenizer, prompt_chat(cfg), cfg.dataset.append_eos, cfg.dataset.rendered)
    run.data = data
    run.pool, run.weights = POOLS[cfg.algorithm](cfg, data.rewards)
    if not run.eval_prompts:  # no prompts section: evaluate on the dataset's own prompts
        run.eval_prompts = data.prompt_texts


def prompt_chat(cfg: OfflineConfig) -> bool:
    """Whether prompts are wrapped in the chat template: ``prompts.chat``, true without a prompts section."""
    return cfg.prompts.chat if cfg.prompts is not None else True


def all_rows(cfg: OfflineConfig, rewards: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    return list(range(len(rewards))), torch.ones_like(rewards)


def best_rows(cfg: OfflineConfig, rewards: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    keep = ilql.top_fraction(rewards, cfg.filtered_bc.fraction)
    if cfg.filtered_bc.min_reward is not None:
        keep &= rewards > cfg.filtered_bc.min_reward
        if not keep.any():
            raise ConfigError(f"filtered_bc.min_reward = {cfg.filtered_bc.min_reward}: no row of the dataset "
                              f"scores above it (the best scores {float(rewards.max()):.4g}); lower it or "
                              f"collect more rows")
    return keep.nonzero().squeeze(-1).tolist(), torch.ones_like(rewards)


def rwr_rows(cfg: OfflineConfig, rewards: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    return list(range(len(rewards))), ilql.rwr_weights(rewards, cfg.rwr.temperature)


# The rows each algorithm trains on and their weights, from the dataset's rewards.
POOLS: dict[str, Callable[[OfflineConfig, torch.Tensor], tuple[list[int], torch.Tensor]]] = {
    "ilql": all_rows, "filtered_bc": best_rows, "rwr": rwr_rows,
}


def ilql_loss(run: OfflineRun, batch: Minibatch) -> tuple[torch.Tensor, dict[str, float]]:
    """L_Q + L_V + alpha L_CQL (+ c_pi L_pi on a shared trunk) of one minibatch (`langrl.rl.ilql`)."""
    cfg = run.config.ilql
    actions, mask = batch.completion_ids, batch.completion_mask
    logits, hidden = completion_forward(run.model, batch.input_ids, batch.attention_mask, actions.size(1),
                                        hidden=True)
    assert hidden is not None
    q = run.heads["q"](hidden)  # (K, B, T, V)
    with torch.no_grad():
        target_q = cast(QHeads, run.heads["q_target"]).taken(hidden, actions).min(0).values  # (B, T)
    v = run.heads["v"](hidden)  # (B, T)
    q_taken = ilql.taken(q, actions)
    y = ilql.q_targets(batch.token_rewards(), token_discounts(mask, cfg.gamma), ilql.next_values(v.detach()))
    loss_q = ilql.q_loss(q_taken, y, mask)
    loss_v = ilql.value_loss(v, target_q, mask, cfg.tau)
    loss_cql = ilql.cql_loss(q, actions, mask)
    loss = loss_q + loss_v + cfg.cql_coef * loss_cql
    advantage = target_q - v.detach()
    valid = mask.bool()
    stats = {"loss/q": float(loss_q.detach()), "loss/v": float(loss_v.detach()), "loss/cql": float(loss_cql.detach()),
             "value/q": float(q_taken.detach()[:, valid].mean()), "value/v": float(v.detach()[valid].mean()),
             "value/advantage": float(advantage[valid].mean()),
             "value/td_error": float((y - q_taken.detach()).abs()[:, valid].mean())}
    if not run.separate and cfg.policy_coef > 0:
        weights = ilql.awac_weights(advantage, cfg.awac_temperature if cfg.policy == "awac" else None,
                                    cfg.awac_max_weight)
        logp = token_logprobs(logits, actions)
        loss_pi = ilql.weighted_nll(logp, weights, mask)
        loss = loss + cfg.policy_coef * loss_pi
        stats |= {"loss/policy": float(loss_pi.detach()), "policy/nll": float(-logp.detach()[valid].mean()),
                  "policy/awac_weight": float(weights[valid].mean())}
    return loss, {"loss/total": float(loss.detach()), **stats}


def nll_loss(run: OfflineRun, batch: Minibatch) -> tuple[torch.Tensor, dict[str, float]]:
    """Row-weighted NLL of the completions (filtered BC: weights 1 on the best rows; RWR: softmax weights)."""
    actions, mask = batch.completion_ids, batch.completion_mask
    logp = token_logprobs(completion_logits(run.model, batch.input_ids, batch.attention_mask, actions.size(1)),
                          actions)
    loss = ilql.weighted_nll(logp, batch.weights, mask)
    return loss, {"loss/total": float(loss.detach()), "loss/policy": float(loss.detach()),
                  "policy/nll": float(-logp.detach()[mask.bool()].mean())}


LOSSES: dict[str, Callable[[OfflineRun, Minibatch], tuple[torch.Tensor, dict[str, float]]]] = {
    "ilql": ilql_loss, "filtered_bc": nll_loss, "rwr": nll_loss,
}


def train_step(run: OfflineRun, step: int) -> dict[str, float]:
    """One optimizer step on the rows of ``step`` (then the Polyak update of ILQL's target heads)."""
    cfg = run.config
    assert run.data is not None
    t0 = time.perf_counter()
    rows = step_rows(run.pool, cfg.train.batch_size, cfg.seed, step)
    batch = collate(run.data, rows, run.weights, run.tokenizer.pad_token_id, run.device)
    set_lr(run.optimizer, cfg.optim, step, cfg.steps)
    params = trainable(run.model, {k: m for k, m in run.heads.items() if k != "q_target"})
    loss_fn = LOSSES[cfg.algorithm]
    stats = minibatch_epochs(len(rows), cfg.train.micro_batch_size, 1, lambda idx: loss_fn(run, batch.select(idx)),
                             run.optimizer, params, cfg.optim.max_grad_norm, step_every="epoch", device=run.device)
    if "q_target" in run.heads:
        ilql.polyak_update(run.heads["q_target"], run.heads["q"], cfg.ilql.polyak)
    elapsed = time.perf_counter() - t0
    return {**stats, "data/reward_mean": float(batch.rewards.mean()),
            "data/tokens": float(batch.completion_mask.sum()), "lr": run.optimizer.param_groups[0]["lr"],
            "time/step_s": elapsed, "samples/per_s": len(rows) / elapsed}


def eval_metrics(run: OfflineRun, logger: RunLogger | None, phase: str, step: int) -> dict[str, float]:
    """Decode the first ``decode.eval_prompts`` evaluation prompts; log them as ``phase`` samples and return
    ``reward/mean`` and ``kl/ref`` (nothing without a reward or with no evaluation prompt)."""
    cfg = run.config
    prompts = run.eval_prompts[:cfg.decode.eval_prompts]
    if run.reward is None or not prompts:
        return {}
    generator = seeds.generator(cfg.seed, "eval_samples", device=run.device)
    result = evaluate_policy(run.policy(), run.base, run.tokenizer, prompts,
                             encode_prompts(prompts, run.tokenizer, prompt_chat(cfg), cfg.dataset.rendered),
                             run.reward, cfg.decode.samples, cfg.decode.max_new_tokens, cfg.decode.batch_prompts,
                             generator)
    rows = result.pop("rows")
    if logger is not None:
        logger.log_eval_samples(phase, step, [r["prompt"] for r in rows], [r["completion"] for r in rows],
                                [r["reward"] for r in rows])
    return {k: float(v) for k, v in result.items()}


def train_offline(config: OfflineConfig, output: str | Path, resume: bool = False, allow_config_change: bool = False,
                  callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train as an offline ``config`` says into the run folder ``output`` (`langrl.train` resolves it).
    ``callbacks`` see every logged step and may stop the run early (`langrl.run.callbacks`)."""
    run_dir = Path(output)
    run = build_run(config)
    parts = Checkpointed(run.model, run.tokenizer, run.optimizer, dict(run.heads))
    last: dict[str, float] = {}
    with RunHarness(run_dir, config, config.log, parts, allow_config_change, callbacks) as harness:
        if resume:
            harness.restore()
        with harness.session(total=config.steps, desc=f"offline {config.algorithm}") as logger:
            load_data(run, run_dir)
            before = eval_metrics(run, logger, "before", 0) if harness.start == 0 else {}
            if before:  # nothing to log without a reward
                harness.log(logger, 0, before)
            step = harness.start
            for step in harness.steps(config.steps):
                last = guarded_step(step, train_step, run, step)
                harness.log(logger, step, last)
                if harness.due(step, config.steps):
                    harness.checkpoint(step, {})
                harness.advance(loss=last["loss/total"])
            if step > harness.start:  # the policy as trained: its own row at the last step
                after = eval_metrics(run, logger, "after", step)
                if after:
                    harness.log(logger, step, after)
                last |= after
    write_report(run_dir)
    summary = summarise_run(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summary)


# ---------------------------------------------------------------------------------------------- evaluation

def trained_run(model: str, cfg: OfflineConfig) -> tuple[str | None, OfflineConfig]:
    """(checkpoint folder, the config it was trained with (its base model, algorithm and heads) with ``cfg``'s
    decode, prompts and reward) for a
    run folder or checkpoint; (None, ``cfg``) for anything else (a model name: decoded as it is)."""
    path = Path(model)
    checkpoints = list_checkpoints(path) if path.is_dir() else []
    checkpoint = checkpoints[-1] if checkpoints else path
    saved = checkpoint.parent.parent / "config.yaml"
    if not (checkpoint.is_dir() and (checkpoint / "trainer_state.json").is_file() and saved.is_file()):
        return None, cfg
    trained = offline_config_from_data(yaml.safe_load(saved.read_text(encoding="utf-8")), None)
    return str(checkpoint), trained.model_copy(update={"decode": cfg.decode, "prompts": cfg.prompts,
                                                       "reward": cfg.reward})


def load_policy(cfg: OfflineConfig, model: str, checkpoint: str | None, base: PreTrainedModel) -> ShapedPolicy:
    """The decoding policy of a checkpoint (its LM or critic trunk, and its heads), or of the model ``model``."""
    if checkpoint is None:
        return decoding_policy(cfg, load_lm(model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed).model, {},
                               None)
    trunk = load_lm(checkpoint, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed).model.eval()
    heads = build_heads(cfg, trunk, base)
    for name, module in heads.items():
        module.load_state_dict(load_tensors(Path(checkpoint) / f"{name}.safetensors"))
    separate = cfg.algorithm == "ilql" and cfg.ilql.trunk == "separate"
    return decoding_policy(cfg, base if separate else trunk, heads, trunk if separate else None)


def evaluate_offline(config: OfflineConfig, model: str, num_prompts: int = 16) -> dict[str, Any]:
    """Decode ``decode.samples`` completions for the first ``num_prompts`` evaluation prompts (the held-out
    ones with ``prompts.holdout``) with ``model``, a run folder or checkpoint (with its heads, at
    ``decode.beta``) or a model name; return mean reward and ``kl/ref``, the KL to ``config.model``."""
    if config.reward is None or config.prompts is None:
        raise ConfigError("evaluating an offline run needs a reward and a prompts section in the config")
    checkpoint, cfg = trained_run(model, config)
    base_lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    policy = load_policy(cfg, model, checkpoint, base_lm.model.eval())
    _, held_out = split_prompts(config.prompts, cfg.seed)
    prompts = held_out[:num_prompts]
    device = next(policy.lm.parameters()).device
    t0 = time.perf_counter()
    result = evaluate_policy(policy, base_lm.model, base_lm.tokenizer, prompts,
                             encode(prompts, base_lm.tokenizer, config.prompts.chat), build_reward(config.reward),
                             cfg.decode.samples, cfg.decode.max_new_tokens, cfg.decode.batch_prompts,
                             seeds.generator(cfg.seed, "evaluate", device=device))
    rows = result.pop("rows")
    return {"model": model, "checkpoint": checkpoint, "reference": cfg.model, "algorithm": cfg.algorithm
            if checkpoint else None, "beta": cfg.decode.beta if policy.shaped else None,
            "prompts": len(prompts), "completions": len(rows), **result, "samples": rows[:8],
            "time_s": time.perf_counter() - t0}


def evaluate_kind(config: OfflineConfig, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: offline`` (``episodes`` does not apply)."""
    return evaluate_offline(config, model, num_prompts)
