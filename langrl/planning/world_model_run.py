"""The ``kind: world_model`` run (`langrl.config.world_model.WorldModelConfig`): fit an LM world model to
transitions of a text environment, measure it on held-out ones.

config -> transitions (collected once from seeded episodes, or read; kept in the run folder as
``transitions.jsonl`` and ``eval_transitions.jsonl``) -> the LM (``small``: fitted to the training texts) ->
seeded minibatches -> SFT loss -> update -> harness. Every ``eval.every`` steps and at the last step the model
predicts the first ``eval.transitions`` held-out steps by greedy decoding (`one_step_accuracy`): the
``eval/*`` metrics, and ``predictions.jsonl`` with a few predicted next to true transitions for the report.

Minibatch rows are a pure function of (seed, step) (`langrl.lm.offline_data.step_rows`) and decoding is
greedy, so a run resumed from its checkpoint at step k logs what the uninterrupted run logs.
``langrl eval CONFIG --model RUN_DIR`` prints the one-step accuracy on the config's held-out seeds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.config.base import read_config_data
from langrl.config.world_model import SMALL, WorldModelConfig, world_model_config_from_data
from langrl.errors import ConfigError
from langrl.lm.offline_data import step_rows
from langrl.models import LM, apply_lora
from langrl.models.loading import resolve_device, resolve_dtype
from langrl.models.small import small_text_lm
from langrl.planning.lm_world_model import (
    Encoded,
    LMWorldModel,
    accuracy,
    encode_transitions,
    encoded_loss,
    predict,
    prediction_rows,
    run_max_new_tokens,
)
from langrl.planning.transitions import (
    Transition,
    collect_transitions,
    read_transitions,
    transition_texts,
    write_transitions,
)
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import newest_checkpoint
from langrl.run.harness import Checkpointed, RunHarness, TrainResult, guarded_step, resolve_run_dir, run_name
from langrl.run.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from langrl.run.optim import build_optimizer, minibatch_epochs, set_lr, trainable
from langrl.run.runtime import load_run_lm, reuse_freed_memory

TRAIN_FILE, EVAL_FILE, PREDICTIONS_FILE = "transitions.jsonl", "eval_transitions.jsonl", "predictions.jsonl"


@dataclass
class WorldModelRun:
    """The live objects of one run: the LM, its optimizer, the encoded training transitions, the held-out
    transitions (those scored) and their encodings."""

    config: WorldModelConfig
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    train: list[Encoded]
    held_out: list[Transition]
    held_out_encoded: list[Encoded]

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else int(self.tokenizer.eos_token_id)


# ---------------------------------------------------------------------------------------------- data

def collected(cfg: WorldModelConfig, held_out: bool, episodes: int | None = None) -> list[Transition]:
    """The training (or held-out) transitions the ``data`` section names: its file, else seeded episodes
    (``episodes`` overrides how many held-out ones)."""
    d = cfg.data
    file = d.eval_file if held_out else d.file
    if file is not None:
        return read_transitions(file, "data.eval_file" if held_out else "data.file")
    if held_out:
        return collect_transitions(d.env_id, d.env_kwargs, episodes or d.eval_episodes, d.eval_seed_start, d.policy,
                                   d.max_steps, d.epsilon)
    return collect_transitions(d.env_id, d.env_kwargs, d.train_episodes, d.seed_start, d.policy, d.max_steps,
                               d.epsilon)


def limited(cfg: WorldModelConfig, transitions: list[Transition]) -> list[Transition]:
    """The first ``data.limit`` training transitions (all without a limit)."""
    limit = cfg.data.limit
    if limit is None:
        return transitions
    if limit > len(transitions):
        raise ConfigError(f"data.limit = {limit}: only {len(transitions)} training transitions were collected; "
                          f"raise data.train_episodes or lower data.limit")
    return transitions[:limit]


def run_transitions(cfg: WorldModelConfig, run_dir: Path) -> tuple[list[Transition], list[Transition]]:
    """(training, held-out) transitions: the run folder's own when it has them (a resumed run trains on what
    it started with), else collected (or read) now."""
    train_file, eval_file = run_dir / TRAIN_FILE, run_dir / EVAL_FILE
    train = read_transitions(train_file, "run") if train_file.is_file() else limited(cfg, collected(cfg, False))
    held_out = read_transitions(eval_file, "run") if eval_file.is_file() else collected(cfg, True)
    return train, held_out


def keep_transitions(run_dir: Path, train: Sequence[Transition], held_out: Sequence[Transition]) -> None:
    """Write the run's transitions into its folder, once."""
    for name, rows in ((TRAIN_FILE, train), (EVAL_FILE, held_out)):
        if not (run_dir / name).is_file():
            write_transitions(run_dir / name, rows)


# ---------------------------------------------------------------------------------------------- model

def build_lm(cfg: WorldModelConfig, texts: Sequence[str]) -> LM:
    """The config's LM (``small``: built over the words of ``texts``), with its LoRA adapter when asked."""
    if cfg.model == SMALL:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        lm = small_text_lm(texts, cfg.small.hidden_size, cfg.small.num_layers, seed=cfg.seed)
        device = resolve_device(cfg.device)
        lm.model.to(device=device, dtype=resolve_dtype(cfg.dtype, device))  # type: ignore[call-arg]
        if device.type == "cpu":
            reuse_freed_memory()
    else:
        lm = load_run_lm(cfg)
    if cfg.lora is not None:
        lora = cfg.lora
        lm.model = cast(PreTrainedModel, apply_lora(lm.model, lora.r, lora.alpha, lora.dropout, lora.target_modules))
    return lm


def build_run(cfg: WorldModelConfig, train: list[Transition], held_out: list[Transition]) -> WorldModelRun:
    """The LM, its optimizer and the encoded transitions."""
    if not train:
        raise ConfigError("data: no training transitions; raise data.train_episodes or check data.file")
    lm = build_lm(cfg, transition_texts(train))
    scored = held_out[:cfg.eval.transitions]
    return WorldModelRun(config=cfg, model=lm.model, tokenizer=lm.tokenizer,
                         optimizer=build_optimizer(trainable(lm.model), cfg.optim),
                         train=encode_transitions(lm.tokenizer, train), held_out=scored,
                         held_out_encoded=encode_transitions(lm.tokenizer, scored))


# ---------------------------------------------------------------------------------------------- steps

def train_step(run: WorldModelRun, step: int) -> dict[str, float]:
    """One optimizer step on the transitions of ``step`` (``train.batch_size``, in micro-batches)."""
    cfg = run.config
    t0 = time.perf_counter()
    batch = [run.train[i] for i in step_rows(list(range(len(run.train))), cfg.train.batch_size, cfg.seed, step)]
    lr = set_lr(run.optimizer, cfg.optim, step, cfg.steps)
    run.model.train()

    def loss_fn(rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss, _ = encoded_loss(run.model, [batch[i] for i in rows.tolist()], run.pad_id)
        return loss, {"loss/sft": float(loss.detach())}

    stats = minibatch_epochs(len(batch), cfg.train.micro_batch_size, 1, loss_fn, run.optimizer,
                             trainable(run.model), cfg.optim.max_grad_norm, step_every="epoch")
    elapsed = time.perf_counter() - t0
    tokens = sum(len(r.prompt) + len(r.target) for r in batch)
    return {**stats, "lr": lr, "data/target_tokens": float(sum(len(r.target) for r in batch)),
            "tokens/per_s": tokens / elapsed, "time/step_s": elapsed}


@torch.no_grad()
def held_out_loss(model: PreTrainedModel, rows: Sequence[Encoded], pad_id: int, batch: int) -> float:
    """The SFT loss (nats per target token) of ``rows``, teacher-forced."""
    total, count = 0.0, 0
    for i in range(0, len(rows), batch):
        loss, n = encoded_loss(model, rows[i:i + batch], pad_id)
        total, count = total + float(loss) * n, count + n
    return total / max(count, 1)


def evaluate_held_out(run: WorldModelRun) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The ``eval/*`` metrics of the current model on the scored held-out transitions, and the first
    ``eval.examples`` predictions next to the truth."""
    cfg = run.config
    t0 = time.perf_counter()
    run.model.eval()
    world_model = LMWorldModel(run.model, run.tokenizer, cfg.max_new_tokens)
    predictions = predict(world_model, run.held_out, cfg.eval.batch)
    metrics = {f"eval/{k}": v for k, v in accuracy(run.held_out, predictions).items()}
    metrics["eval/loss"] = held_out_loss(run.model, run.held_out_encoded, run.pad_id, cfg.eval.batch)
    metrics["time/eval_s"] = time.perf_counter() - t0
    n = cfg.eval.examples
    return metrics, prediction_rows(run.held_out[:n], predictions[:n])


def evaluation_due(cfg: WorldModelConfig, step: int) -> bool:
    return step == cfg.steps or (cfg.eval.every > 0 and step % cfg.eval.every == 0)


def train_world_model(config: WorldModelConfig | dict[str, Any] | str | Path, output: str | Path | None = None,
                      resume: bool = False, allow_config_change: bool = False,
                      callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a ``kind: world_model`` run into ``output`` (default ``runs/<config name>-<time>``); ``resume``
    continues it from its newest intact checkpoint. ``callbacks`` see every logged step and may stop the run
    early (`langrl.run.callbacks`)."""
    cfg = config if isinstance(config, WorldModelConfig) else world_model_config_from_data(*read_config_data(config))
    run_dir = resolve_run_dir(run_name(config, "world_model"), output, resume)
    train, held_out = run_transitions(cfg, run_dir)
    run = build_run(cfg, train, held_out)
    parts = Checkpointed(run.model, run.tokenizer, run.optimizer)
    last: dict[str, float] = {}
    with RunHarness(run_dir, cfg, cfg.log, parts, allow_config_change, callbacks) as harness:
        if resume:
            harness.restore()
        with harness.session(total=cfg.steps, desc="world model") as logger:
            keep_transitions(run_dir, train, held_out)
            for step in harness.steps(cfg.steps):
                last = guarded_step(step, train_step, run, step)
                if evaluation_due(cfg, step):
                    scores, examples = evaluate_held_out(run)
                    last |= scores
                    atomic_write_jsonl(run_dir / PREDICTIONS_FILE, [{"step": step, **row} for row in examples])
                harness.log(logger, step, last)
                if harness.due(step, cfg.steps):
                    harness.checkpoint(step, {})
                harness.advance(loss=last["loss/sft"])
    write_world_model_report(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summarise_world_model(run_dir))


# ---------------------------------------------------------------------------------------------- report

def summarise_world_model(run_dir: Path) -> dict[str, Any]:
    """The last held-out accuracy, the training loss's first and last values, and the speed."""
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl", missing_ok=True)
    losses = [r["loss/sft"] for r in rows if r.get("loss/sft") is not None]
    evals = [r for r in rows if r.get("eval/obs_exact") is not None]
    final = evals[-1] if evals else {}
    step_s = [r["time/step_s"] for r in rows if r.get("time/step_s") is not None]
    per_s = [r["tokens/per_s"] for r in rows if r.get("tokens/per_s") is not None]
    headline = []
    if final:
        headline.append(f"held-out one-step accuracy at step {final['step']} ({int(final['eval/transitions'])} "
                        f"transitions): next observation exact {final['eval/obs_exact']:.3f} (line F1 "
                        f"{final['eval/obs_line_f1']:.3f}), reward {final['eval/reward_accuracy']:.3f}, success "
                        f"{final['eval/success_accuracy']:.3f}, done {final['eval/done_accuracy']:.3f}; held-out "
                        f"loss {final['eval/loss']:.4f} nats/token")
    if losses:
        headline.append(f"training loss {losses[0]:.4f} (step 1) -> {losses[-1]:.4f} nats/token; "
                        f"{statistics.median(step_s):.3f} s/step, {statistics.median(per_s):.0f} tokens/s (medians)")
    return {"headline": headline, "final": final, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "evaluations": evals}


def write_world_model_report(run_dir: Path) -> Path:
    """``report.md`` of a world-model run, from its folder: the headline, the loss and held-out accuracy over
    steps, and a few predicted next to true transitions (``predictions.jsonl``)."""
    run_dir = Path(run_dir)
    summary = summarise_world_model(run_dir)
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl", missing_ok=True) if r.get("loss/sft") is not None]
    shown = rows[::max(1, len(rows) // 20)]  # about 20 rows, and the last
    if rows and shown[-1] is not rows[-1]:
        shown.append(rows[-1])
    lines = ["# LM world model", "", *[f"- {h}" for h in summary["headline"]], "", "## Training loss", "",
             "| step | loss/sft | lr |", "| --- | --- | --- |"]
    lines += [f"| {r['step']} | {r['loss/sft']:.4f} | {r.get('lr', float('nan')):.3g} |" for r in shown]
    keys = ("obs_exact", "obs_line_f1", "reward_accuracy", "success_accuracy", "done_accuracy", "loss")
    lines += ["", "## Held-out one-step accuracy", "", "| step | " + " | ".join(keys) + " |",
              "| --- |" + " --- |" * len(keys)]
    lines += ["| " + " | ".join([str(r["step"]), *(f"{r[f'eval/{k}']:.4f}" for k in keys)]) + " |"
              for r in summary["evaluations"]]
    examples = read_jsonl(run_dir / PREDICTIONS_FILE, missing_ok=True)
    if examples:
        lines += ["", f"## Predicted and true transitions (held-out, step {examples[0]['step']})"]
    for i, ex in enumerate(examples, 1):
        verdict = "exact" if ex["predicted_observation"] == ex["next_observation"] else "differs"
        lines += ["", f"### {i}. action: {ex['action']} (next observation {verdict})", "", "Observation:", "",
                  "```text", ex["observation"], "```", "",
                  f"True next (reward {ex['reward']:.2f}, done {ex['done']}):", "", "```text", ex["next_observation"],
                  "```", "", f"Predicted (reward {ex['predicted_reward']:.2f}, done {ex['predicted_done']}):", "",
                  "```text", ex["predicted_observation"], "```"]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- evaluation

def evaluate_world_model(cfg: WorldModelConfig, model: str, episodes: int | None = None) -> dict[str, Any]:
    """The one-step accuracy of ``model`` (a world_model run folder or checkpoint, or an LM `load_lm` takes)
    on the first ``eval.transitions`` transitions of the config's held-out data (``episodes`` held-out
    episodes; default ``data.eval_episodes``)."""
    if model == SMALL:
        raise ConfigError("--model small: an untrained small model is built from training texts, not loaded; "
                          "pass a world_model run folder (or one of its checkpoints/step-N)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    checkpoint = Path(newest_checkpoint(model))
    held_out = collected(cfg, True, episodes)[:cfg.eval.transitions]
    world_model = LMWorldModel.load(model, run_max_new_tokens(checkpoint, cfg.max_new_tokens), cfg.device, cfg.dtype)
    t0 = time.perf_counter()
    predictions = predict(world_model, held_out, cfg.eval.batch)
    pad = world_model.tokenizer.pad_token_id
    loss = held_out_loss(world_model.model, encode_transitions(world_model.tokenizer, held_out),
                         int(pad if pad is not None else world_model.tokenizer.eos_token_id), cfg.eval.batch)
    d = cfg.data
    last_seed = d.eval_seed_start + (episodes or d.eval_episodes) - 1
    return {"model": model, "checkpoint": str(checkpoint) if checkpoint.exists() else None, "env": d.env_id,
            "seeds": None if d.eval_file else [d.eval_seed_start, last_seed],
            **accuracy(held_out, predictions), "loss": loss, "max_new_tokens": world_model.max_new_tokens,
            "time_s": time.perf_counter() - t0,
            "examples": prediction_rows(held_out[:cfg.eval.examples], predictions[:cfg.eval.examples])}


def evaluate_kind(config: WorldModelConfig, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: world_model`` (``num_prompts`` does not apply)."""
    return evaluate_world_model(config, model, episodes)


__all__ = ["build_lm", "evaluate_kind", "evaluate_world_model", "summarise_world_model", "train_world_model",
           "write_world_model_report"]
