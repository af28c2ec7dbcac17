"""Weights as they travel to rollout workers: NumPy arrays by name, which Ray's object store shares between
processes on a node without a copy. bfloat16 travels as its int16 bit pattern (NumPy has no bfloat16)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn


def trainable_arrays(module: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """``<prefix>.<name>`` for each trainable parameter of ``module`` (with LoRA: the adapter alone)."""
    return {f"{prefix}.{name}": to_numpy(p) for name, p in module.named_parameters() if p.requires_grad}


def state_arrays(module: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """``<prefix>.<name>`` for each entry of ``module``'s state dict (parameters and buffers)."""
    return {f"{prefix}.{name}": to_numpy(t) for name, t in module.state_dict().items()}


def load_arrays(targets: Mapping[str, nn.Module], state: Mapping[str, np.ndarray]) -> None:
    """Copy arrays named ``<prefix>.<name>`` into ``targets[prefix]``'s parameter or buffer ``name``, in place."""
    tensors = {f"{prefix}.{name}": t for prefix, module in targets.items()
               for name, t in [*module.named_parameters(), *module.state_dict().items()]}
    with torch.no_grad():
        for key, array in state.items():
            target = tensors[key]
            target.copy_(from_numpy(array, target.dtype))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


def from_numpy(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A tensor over ``a`` (no copy). Ray hands out read-only arrays; they are only read from here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t
