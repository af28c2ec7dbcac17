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


def mlp(hidden_size: int, out_size: int) -> nn.Sequential:
    """h -> Linear(H, 2H) -> ReLU -> Linear(2H, out), the last layer zero-initialised (outputs start at 0)."""
    last = nn.Linear(2 * hidden_size, out_size)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size), nn.ReLU(), last)


class MLPValueHead(nn.Module):
    """V(s_t) = MLP(h_t), in float32: a state value for offline Q-learning (ILQL), where V is a target of
    its own (an expectile of Q) rather than a baseline, and a linear read-out of a shared trunk is tight.
    Zero-initialised like `ValueHead`."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.net = mlp(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (...)."""
        return self.net(hidden.float()).squeeze(-1)


class QHeads(nn.Module):
    """K token-level Q heads over a vocabulary: Q_k(s, a) = f_k(h_s) . e_a + b_{k,a}, in float32.

    ``e_a`` is row a of ``action_embeddings`` (V, H), a frozen copy of the LM's output embedding taken
    when the heads are built; f_k is an MLP of the state's final hidden state h_s. A full (H, V) linear
    head per Q would be a vocabulary-sized matrix (28M parameters on SmolLM2, four of them with the
    target copies, plus their optimizer state) trained from the few actions a dataset takes; through the
    embedding, what is learnt about a token carries over to tokens the LM already places near it. The
    embedding is a non-persistent buffer: checkpoints hold only f_k and b_k, and whoever rebuilds the
    heads passes the same embedding (the base model's). Zero-initialised: every Q starts at 0.
    """

    def __init__(self, hidden_size: int, action_embeddings: torch.Tensor, count: int = 2):
        super().__init__()
        if action_embeddings.dim() != 2 or action_embeddings.size(1) != hidden_size:
            raise ValueError(f"action_embeddings must be (V, {hidden_size}), got {tuple(action_embeddings.shape)}")
        self.towers = nn.ModuleList(mlp(hidden_size, hidden_size) for _ in range(count))
        self.bias = nn.Parameter(torch.zeros(count, action_embeddings.size(0)))
        self.embeddings: torch.Tensor
        self.register_buffer("embeddings", action_embeddings.detach().float().clone(), persistent=False)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (K, ..., H): f_k(h) of every head."""
        h = hidden.float()
        return torch.stack([tower(h) for tower in self.towers])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (K, ..., V): every head's Q over the whole vocabulary."""
        feats = self.features(hidden)
        bias = self.bias.reshape(self.bias.size(0), *([1] * (feats.dim() - 2)), -1)
        return feats @ self.embeddings.T + bias

    def taken(self, hidden: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(..., H) x (...) token ids -> (K, ...): Q_k(s, a) of the given actions only (no vocabulary-sized
        product)."""
        feats = self.features(hidden)
        return (feats * self.embeddings[actions]).sum(-1) + self.bias[:, actions]
