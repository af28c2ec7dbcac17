"""An LM as the observation encoder of a Stable-Baselines3 agent.

:class:`LMEncoder` is an SB3 ``BaseFeaturesExtractor``: it reads the token ids that `TokenizeObservation`
puts in a ``Box``, runs the LM's backbone (no LM head: the 49k-token projection of SmolLM2 would cost
more than the rest), and pools the final hidden states into one vector per observation.

Three ways to treat the LM (``finetune``):

- ``frozen`` (default): no gradient reaches the LM, and each distinct observation is encoded once
  (a bounded LRU cache keyed by the ids' bytes). The LM is kept *outside* the module tree: SB3's DQN
  builds two extractors (online and target network) and Polyak-averages their parameters in place,
  which on one shared tensor would scale the LM's weights by ``1 - tau**2`` (zero them at DQN's
  default ``tau = 1``). Outside the tree it is shared, never averaged, and not saved in checkpoints.
- ``full``: a private copy of the backbone trains with the agent.
- ``lora``: a private copy with LoRA adapters (Hu et al. 2021); only the adapters train.

``layers``: use only the first n decoder blocks (then the final norm): cheaper, and sometimes better
features (`first_layers`).

``batch_misses`` (default on): the observations a batch misses in the cache are encoded in one pass, the
fastest way; a feature may then differ in its last bits with what it was batched with (the batch is cut to
its longest text, and kernels may sum in another order at another shape, on GPUs notably). Off, each is
encoded alone, so its feature depends on the observation only: every process that encodes it gets the same
bits (what DQN's collection in shards needs: `langrl.agents.dqn_run`).

``normalize`` (default on) standardises each feature dimension with running statistics, as SB3's
``VecNormalize`` does for observations. Pooled LM states are dominated by a few huge, nearly constant
dimensions: on CartPole-Text, SmolLM2-135M's mean-pooled features have one dimension near 33 while a
dimension varies by ~0.05 across observations, and any two observations have cosine similarity > 0.99.
An MLP initialised for unit-scale inputs barely sees the differences; measured on CartPole-Text, PPO
without this step never left the one-action policy (see docs/agents.md).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from langrl.agents.cache import LRUCache
from langrl.agents.shared_lm import resolve_lm
from langrl.models.loading import LM

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Pooling = Literal["mean", "last"]
Finetune = Literal["frozen", "full", "lora"]


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """Hidden states (B, T, H) and right-padding mask (B, T) -> (B, H).

    ``mean``: average over the real tokens; ``last``: the state of the last real token (for a causal LM
    the only one that has read the whole text). An all-padding row gives zeros (mean) or position 0.
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if how == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if how == "last":
        last = (mask.long().sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"pooling = {how!r}; use 'mean' or 'last'")


class RunningStandardize(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` per dimension, clipped to +-``clip``, with the mean and variance
    of every feature batch seen so far (Chan et al.'s parallel update).

    The statistics are buffers named ``running_*``: saved with the policy, and copied from the online to
    the target network by SB3's DQN, which syncs buffers with that prefix (as for batch norm).
    """

    running_mean: torch.Tensor  # buffers, registered in __init__
    running_var: torch.Tensor
    running_count: torch.Tensor

    def __init__(self, dim: int, eps: float = 1e-8, clip: float = 10.0):
        super().__init__()
        self.eps, self.clip = eps, clip
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("running_count", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch (B, D) into the running statistics."""
        n, count = x.size(0), self.running_count.clone()
        total = count + n
        delta = x.mean(0) - self.running_mean
        m2 = self.running_var * count + x.var(0, unbiased=False) * n + delta.square() * count * n / total
        self.running_mean += delta * n / total
        self.running_var.copy_(m2 / total)
        self.running_count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sqrt(self.running_var + self.eps)
        return ((x - self.running_mean) / scale).clamp(-self.clip, self.clip)


def first_layers(backbone: nn.Module, n: int | None) -> nn.Module:
    """``backbone`` running only its first ``n`` decoder blocks, then its final norm (None: all of them).

    Middle layers often carry an input's details better than the last one, at a fraction of the cost
    (on CartPole-Text a linear probe reads the pole angle from SmolLM2-135M's layer 16 of 30 with R^2
    0.94, from layer 30 with 0.92). The view shares the blocks and weights; nothing is copied.
    """
    if n is None:
        return backbone
    blocks = getattr(backbone, "layers", None)
    if not isinstance(blocks, nn.ModuleList) or not 1 <= n <= len(blocks):
        count = len(blocks) if isinstance(blocks, nn.ModuleList) else "no list of"
        raise ValueError(f"layers = {n}: the LM has {count} decoder blocks; use 1..{count} or None")
    view = copy.copy(backbone)
    view._modules = dict(backbone._modules)
    view._modules["layers"] = nn.ModuleList(list(blocks)[:n])
    view.config = copy.copy(backbone.config)
    cast(Any, view.config).num_hidden_layers = n  # a transformers config; nn.Module.__getattr__ types it Tensor
    return view


class Frozen:
    """Holds a module without registering it as a submodule (see the module docstring for why)."""

    def __init__(self, module: nn.Module):
        self.module = module.eval().requires_grad_(False)


class LMEncoder(BaseFeaturesExtractor):
    """Token ids (B, L) -> features (B, H), H the LM's hidden size.

    Use as ``policy_kwargs={"features_extractor_class": LMEncoder, "features_extractor_kwargs":
    {"lm": lm}}`` with an environment wrapped in `TokenizeObservation` built from the same tokenizer.
    ``lm_forward_calls`` counts backbone passes and ``cache`` holds (and counts) cached features.

    ``lm`` by name (``"smollm2-135m-instruct"``, ``"tiny"``, a folder) is loaded once per process and
    shared; SB3 saves ``policy_kwargs`` with the agent, so a name keeps the LM out of the saved zip (an `LM`
    object would be pickled into it), and ``load`` reloads the model by name.
    """

    def __init__(self, observation_space: spaces.Box, lm: LM | str, pooling: Pooling = "mean",
                 finetune: Finetune = "frozen", cache_size: int = 100_000, normalize: bool = True,
                 lora_r: int = 8, lora_alpha: float = 16.0, lora_targets: list[str] | str = "all-linear",
                 layers: int | None = None, batch_misses: bool = True):
        model = resolve_lm(lm)
        backbone = first_layers(model.model.base_model, layers)  # the transformer without its LM head
        super().__init__(observation_space, features_dim=int(model.model.config.hidden_size))
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling = {pooling!r}; use 'mean' or 'last'")
        self.pooling: Pooling = pooling
        self.finetune: Finetune = finetune
        self.batch_misses = batch_misses
        self.pad_id = model.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = model.tokenizer.eos_token_id
        self.frozen: Frozen | None = None
        self.cache: LRUCache[bytes, torch.Tensor] = LRUCache(cache_size if finetune == "frozen" else 0)
        self.lm_forward_calls = 0
        self.standardize = RunningStandardize(self.features_dim) if normalize else None
        if finetune == "frozen":
            self.frozen = Frozen(backbone)
        elif finetune == "full":
            self.backbone = copy.deepcopy(backbone).requires_grad_(True)
        elif finetune == "lora":
            from langrl.models import apply_lora

            copied = cast("PreTrainedModel", copy.deepcopy(backbone))
            self.backbone = apply_lora(copied, lora_r, lora_alpha, 0.0, lora_targets, task_type=None)
        else:
            raise ValueError(f"finetune = {finetune!r}; use 'frozen', 'full' or 'lora'")

    def lm(self, device: torch.device) -> nn.Module:
        """The backbone, moved to ``device`` on first use when it lives outside the module tree."""
        if self.frozen is None:
            return self.backbone
        module = self.frozen.module
        if next(module.parameters()).device != device:
            module.to(device)
        return module

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """One backbone pass: ids (B, L) -> pooled features (B, H), float32.

        The batch is cut to its longest real text first: observations are padded to a fixed L, and
        attention cost grows with the padded length.
        """
        mask = ids != self.pad_id
        length = max(1, int(mask.sum(1).max()))
        ids, mask = ids[:, :length], mask[:, :length]
        self.lm_forward_calls += 1
        hidden = self.lm(ids.device)(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        features = pool_hidden(hidden.float(), mask, self.pooling)
        if self.standardize is not None:
            self.standardize.update(features.detach())
        return features

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """(B, L) ids (SB3 hands them as floats) -> (B, H) features; frozen: from the cache when seen.

        The cache holds raw features; standardisation comes after it, so a cached observation follows
        the running statistics (which each newly encoded observation updates).
        """
        features = self.raw_features(observations.long())
        return features if self.standardize is None else self.standardize(features)

    def raw_features(self, ids: torch.Tensor) -> torch.Tensor:
        """Pooled LM features (B, H) before standardisation."""
        if self.frozen is None:
            return self.encode(ids)
        keys = [row.tobytes() for row in ids.cpu().numpy()]
        out = torch.empty(len(keys), self.features_dim, device=ids.device)
        missing: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if key not in missing else None
            if hit is None:
                missing.setdefault(key, []).append(i)
            else:
                out[i] = hit
        if missing:
            rows = torch.tensor([where[0] for where in missing.values()], device=ids.device)
            with torch.no_grad():
                features = (self.encode(ids[rows]) if self.batch_misses
                            else torch.cat([self.encode(ids[row:row + 1]) for row in rows]))
            for (key, where), feature in zip(missing.items(), features, strict=True):
                self.cache.put(key, feature)
                out[where] = feature
        return out

    def remember(self, ids: torch.Tensor, features: torch.Tensor) -> None:
        """Cache ``features`` (B, H) of the observations ``ids`` (B, L) the cache lacks: features computed
        elsewhere (a rollout worker), so that this encoder need not compute them again. No lookup is counted."""
        if self.frozen is None:
            return
        for row, feature in zip(ids.long().cpu().numpy(), features, strict=True):
            key = row.tobytes()
            if key not in self.cache:
                self.cache.put(key, feature)

    def train(self, mode: bool = True) -> LMEncoder:
        """A frozen LM stays in eval mode (no dropout) whatever SB3 asks of the policy."""
        super().train(mode)
        if self.frozen is not None:
            self.frozen.module.eval()
        return self
