"""Optimizer, learning-rate schedule, gradient clipping, freezing, and the epoch x minibatch loop that every
learner (token-level policy gradient, actor-critic, DPG, the LM agent's PPO, behaviour cloning) runs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn

from langrl.config.base import OptimConfig
from langrl.errors import ConfigError, NonFiniteError
from langrl.run import parallel

# One minibatch's rows (an index tensor) -> its loss and the quantities to log.
MinibatchLoss = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def build_optimizer(params: list[nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over ``params``.

    fused: one kernel per parameter group instead of a chain of foreach ops over all parameters; it reads
    and writes the optimizer state once (faster on CPU and CUDA, see benchmarks/RESULTS.md).
    """
    fused = params[0].device.type in ("cpu", "cuda") if params else None
    return torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay,
                             fused=fused)


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


def set_lr(optimizer: torch.optim.Optimizer, optim: OptimConfig, step: int, steps: int) -> float:
    """Set the learning rate of ``step`` of ``steps`` on every parameter group; return it."""
    lr = optim.lr * lr_factor(step, steps, optim.warmup_steps, optim.schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping); returns the norm before clipping."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return 0.0
    limit = max_norm if max_norm > 0 else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(with_grad, limit))


def trainable(model: nn.Module, extra: dict[str, nn.Module] | None = None) -> list[nn.Parameter]:
    """Parameters that get gradients: the model's (all, or LoRA's) and the extra modules'."""
    params = [p for p in model.parameters() if p.requires_grad]
    for module in (extra or {}).values():
        params += [p for p in module.parameters() if p.requires_grad]
    return params


def freeze(model: nn.Module, patterns: list[str], field: str = "train.freeze") -> None:
    """Stop gradients to every parameter whose name contains one of ``patterns``."""
    if not patterns:
        return
    names = [name for name, _ in model.named_parameters()]
    unmatched = [p for p in patterns if not any(p in name for name in names)]
    if unmatched:
        raise ConfigError(f"{field} = {unmatched}: no parameter name contains it "
                          f"(names look like {names[0]!r})")
    for name, param in model.named_parameters():
        if any(p in name for p in patterns):
            param.requires_grad_(False)


def mean_metrics(stats: dict[str, list[float]]) -> dict[str, float]:
    """Average each logged quantity over the minibatches of an update."""
    return {key: sum(values) / len(values) for key, values in stats.items()}


def minibatch_epochs(
    n: int,
    size: int,
    epochs: int,
    loss_fn: MinibatchLoss,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    max_grad_norm: float,
    generator: torch.Generator | None = None,
    step_every: Literal["minibatch", "epoch"] = "minibatch",
    device: torch.device | None = None,
) -> dict[str, float]:
    """``epochs`` passes over ``n`` rows in minibatches of ``size``; return each logged quantity's mean.

    Rows are shuffled with ``generator`` each epoch, or taken in order without one. ``step_every``:

    - ``minibatch``: one optimizer step per minibatch (PPO, behaviour cloning);
    - ``epoch``: gradients accumulate over the epoch, each minibatch's loss weighted by its share of the
      rows, then one step (one step per batch of samples: REINFORCE, RLOO, GRPO, A2C, DPG).

    ``grad/norm`` is logged before clipping at every optimizer step. A non-finite loss or gradient norm
    raises `NonFiniteError` before any optimizer step it would reach, so the weights stay finite.

    Among data-parallel learners (`langrl.run.parallel`) the gradients are summed across learners before
    each step, so every learner takes the single learner's step: with ``epoch`` each computes every W-th
    minibatch; with ``minibatch`` each computes every W-th row of every minibatch, its loss weighted by its
    share of the rows (exact for losses that average over rows: ``loss_aggregation: seq_mean``).
    """
    stats: dict[str, list[float]] = {}

    def step() -> None:
        parallel.reduce_gradients(params)
        norm = clip_gradients(params, max_grad_norm)
        if not math.isfinite(norm):  # before the step: the weights stay as they were
            raise NonFiniteError(f"the gradient norm is {norm}")
        stats.setdefault("grad/norm", []).append(norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def accumulate(rows: torch.Tensor, scale: float) -> None:
        loss, parts = loss_fn(rows)
        if not bool(torch.isfinite(loss.detach())):
            shown = ", ".join(f"{k} = {v:.4g}" for k, v in parts.items())
            raise NonFiniteError(f"the loss is {float(loss.detach())} ({shown})")
        (loss * scale).backward()
        for key, value in parts.items():
            stats.setdefault(key, []).append(value)

    optimizer.zero_grad(set_to_none=True)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        minibatches = order.to(device or "cpu").split(size)
        if step_every == "epoch":
            for rows in parallel.mine(minibatches):
                accumulate(rows, len(rows) / n)
            step()
            continue
        for rows in minibatches:
            share = parallel.mine_rows(rows)
            if len(share):
                accumulate(share, len(share) / len(rows))
            step()
    return mean_metrics(parallel.gather_lists(stats))
