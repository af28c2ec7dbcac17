"""A scalar value head on an LM's final hidden states, for actor-critic methods."""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """V(s_t) = w . h_t + b on the final (normalised) hidden state h_t, in float32.

    Zero-initialised, so every value starts at 0 and the first advantages are plain returns; the head is
    kept in float32 even when the trunk runs in bf16, since value targets are small differences.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (...)."""
        return self.linear(hidden.float()).squeeze(-1)
