"""What every algorithm shares: the KL coefficient (fixed or adaptive) and the hooks the trainer calls.

An algorithm is built from the config, turns a :class:`Batch` into one optimisation step, and says what
it needs from the trainer: which model to sample from (``behaviour``), a value head to record values
while sampling (``value_head``), and any extra modules to optimise and checkpoint (``modules``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from langrl.config import Config, KLConfig
from langrl.lm.batch import Batch
from langrl.rl.kl import sequence_kl
from langrl.rl.kl_control import AdaptiveKLController, FixedKLController


def kl_controller(kl: KLConfig) -> AdaptiveKLController | FixedKLController:
    """Adaptive (Ziegler et al. 2019) when ``kl.target`` is set, else fixed at ``kl.coef``."""
    if kl.target is not None:
        return AdaptiveKLController(coef=kl.coef, target=kl.target, horizon=kl.horizon)
    return FixedKLController(coef=kl.coef)


class Algorithm:
    """Base of the algorithms (the only level of inheritance): KL control and default hooks."""

    def __init__(self, name: str, config: Config):
        self.name, self.config = name, config
        self.kl_control = kl_controller(config.kl)

    @property
    def kl_coef(self) -> float:
        """The current beta of beta * KL(pi || pi_ref)."""
        return self.kl_control.coef

    @property
    def value_head(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Final hidden state -> value, recorded while sampling; None when the algorithm has no critic."""
        return None

    def modules(self) -> dict[str, nn.Module]:
        """Extra modules (value heads, critics, proposals) to checkpoint; trainable ones are optimised."""
        return {}

    def sampling_modules(self) -> dict[str, nn.Module]:
        """The modules sampling reads (the behaviour model, the value head): what rollout workers receive
        with the policy's weights at each step."""
        return self.modules()

    def behaviour(self, policy: PreTrainedModel) -> PreTrainedModel:
        """The model that samples the batch: the policy itself, on-policy."""
        return policy

    def update(self, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
               batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def after_update(self, batch: Batch) -> dict[str, float]:
        """Move the KL coefficient toward its target with this batch's KL; return what to log."""
        kl = float(sequence_kl(batch.kl_tokens, batch.completion_mask).mean())
        return {"kl/coef": self.kl_control.update(kl, len(batch))}

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (tensors go through ``modules``)."""
        return {"kl_control": self.kl_control.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "kl_control" in state:
            self.kl_control.load_state_dict(state["kl_control"])
