"""Linear layers with pre-packed weights for decoding on CPU.

Decoding multiplies a handful of rows (one token per sequence) by every weight matrix, once per token.
At so few rows the default float32 GEMM reads the weights inefficiently: on the project's 2-core AVX2
machine a (8 x 576) @ (576 x 1536) product runs at ~10 GB/s, and the 49152 x 576 LM head takes 17 ms.
oneDNN's linear on a weight reordered once into its blocked layout does the same float32 maths
(another summation order, so results agree to rounding) 1.5-2.8x faster (0.36 -> 0.23 ms; LM head
17 -> 6 ms). Reordering every weight of SmolLM2-135M costs ~0.15 s, paid once per rollout because the
policy changes between rollouts. With many rows (the prefill, scoring, training) the packed and plain
GEMMs take the same time, so packed layers fall back to the plain one there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

PACKED_MAX_ROWS = 32  # above this many rows the plain GEMM is as fast (measured up to 330 rows)


def can_pack(model: nn.Module) -> bool:
    """Packing applies to float32 weights on a CPU whose torch build has oneDNN."""
    weight = next(model.parameters(), None)
    return (weight is not None and weight.device.type == "cpu" and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available())


def pack(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, in) reordered into oneDNN's blocked layout for products of a few rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKED_MAX_ROWS)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with the weight as :func:`pack` returned it."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class PackedForward:
    """``F.linear`` of one layer with its weight in oneDNN's blocked layout; few rows only."""

    def __init__(self, layer: nn.Linear):
        self.weight, self.bias = layer.weight, layer.bias
        self.packed = pack(layer.weight)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() // x.size(-1) > PACKED_MAX_ROWS or torch.is_grad_enabled() and x.requires_grad:
            return F.linear(x, self.weight, self.bias)
        return packed_linear(x, self.packed, self.bias)


@contextmanager
def packed_linears(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` whose ``nn.Linear`` layers compute few-row products with packed weights, for decoding.

    Weights must not change inside the context (the packed copies would go stale); on exit the layers
    are restored. Memory: one packed copy of the linear weights while the context is open. Elsewhere
    than float32 on a oneDNN CPU build, ``model`` is returned as it is.
    """
    layers = [m for m in model.modules() if type(m) is nn.Linear] if can_pack(model) else []
    with torch.no_grad():
        for layer in layers:
            layer.forward = PackedForward(layer)  # type: ignore[method-assign, assignment]  # per-instance override
    try:
        yield model
    finally:
        for layer in layers:
            del layer.forward
