"""A lean decode step for Llama-architecture models on CPU (SmolLM2, Llama, TinyLlama...).

After the prompt's prefill (done by the model itself), every decode step multiplies a handful of rows by
every weight. On the project's 2-core CPU, transformers' forward spends ~20 ms of a ~70 ms step of
SmolLM2-135M outside the matrix products: module calls, mask building, a growing key/value cache that is
concatenated at every step, separate q/k/v and gate/up products. This step does the same maths with

- the q, k, v weights in one matrix and the gate and up weights in another, each reordered once per
  rollout into oneDNN's blocked layout (see `langrl.models.packed`);
- a key/value buffer allocated for the whole rollout and written in place;
- q and k rotated in one operation, each RMS norm as one ``F.rms_norm`` call, an additive attention
  mask built once per rollout;
- the model's own rotary embedding and embedding modules, and its norms' weights and epsilon.

Results agree with the model's forward to float rounding (other summation orders), checked in
``tests/test_sampling.py``. Any other architecture, dtype or device uses the model's forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from peft import PeftModel
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel

from langrl.models.packed import can_pack, pack
from langrl.models.packed import packed_linear as linear


def causal_lm(model: PreTrainedModel) -> PreTrainedModel:
    """The transformers model itself, also when ``model`` is wrapped by PEFT."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def supports(model: PreTrainedModel) -> bool:
    """A plain float32 Llama causal LM on a oneDNN CPU, with no biases and plain linear layers (a LoRA
    model qualifies inside `merged_lora`, which swaps its adapters out)."""
    model = causal_lm(model)
    config = model.config
    if config.model_type != "llama" or not can_pack(model) or not hasattr(model, "lm_head"):
        return False
    if config.attention_bias or config.mlp_bias or config.hidden_act != "silu":
        return False
    names = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
             "mlp": ("gate_proj", "up_proj", "down_proj")}
    linears = [getattr(getattr(layer, part), name, None) for layer in model.model.layers
               for part, members in names.items() for name in members]
    return all(type(m) is nn.Linear for m in [*linears, model.lm_head])


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class Block:
    """One decoder layer: its norms (the model's ``LlamaRMSNorm`` modules) and packed weights."""

    input_norm: nn.Module
    post_norm: nn.Module
    qkv: torch.Tensor
    out: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class LlamaDecoder:
    """Decode steps for B sequences after a prefill, with a preallocated key/value buffer.

    ``cache`` is the prefill's ``DynamicCache`` (batch B, Tp positions), ``mask`` (B, Tp) the prompt's
    attention mask, ``steps`` the most tokens that will be decoded. The model's weights must not change
    while the decoder is in use.
    """

    def __init__(self, model: PreTrainedModel, cache, mask: torch.Tensor, steps: int):
        model = causal_lm(model)
        config, inner = model.config, model.model
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.embed, self.rotary, self.norm = inner.embed_tokens, inner.rotary_emb, inner.norm
        self.blocks = [self.block(layer) for layer in inner.layers]
        self.head = pack(model.lm_head.weight)
        self.scaling = inner.layers[0].self_attn.scaling
        self.filled = mask.size(1)
        b, size = mask.size(0), mask.size(1) + steps
        self.keys, self.values = [], []
        for layer in cache.layers:
            k = layer.keys.new_empty(b, self.kv_heads, size, self.head_dim)
            v = layer.values.new_empty(b, self.kv_heads, size, self.head_dim)
            k[:, :, : self.filled] = layer.keys
            v[:, :, : self.filled] = layer.values
            self.keys.append(k)
            self.values.append(v)
        valid = torch.cat([mask.bool(), mask.new_ones(b, steps, dtype=torch.bool)], 1)[:, None, None]
        # Additive, not boolean: SDPA would turn a boolean mask into this at every call.
        self.bias = torch.zeros(valid.shape, dtype=self.keys[0].dtype).masked_fill_(~valid, float("-inf"))

    @staticmethod
    def block(layer: nn.Module) -> Block:
        attn: Any = layer.self_attn  # nn.Module.__getattr__ is typed Tensor | Module
        mlp: Any = layer.mlp
        qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        return Block(cast(nn.Module, layer.input_layernorm), cast(nn.Module, layer.post_attention_layernorm),
                     pack(qkv), pack(attn.o_proj.weight), pack(gate_up), pack(mlp.down_proj.weight))

    def step(self, token: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed one token per sequence (B,) at ``position`` (B, 1); return the next-token logits (B, V)
        in float32 and the final (normed) hidden state (B, H)."""
        h = self.embed(token[:, None])  # (B, 1, H)
        cos, sin = self.rotary(h, position)  # (B, 1, d): one rotation for every head of q and k
        t = self.filled
        for block, keys, values in zip(self.blocks, self.keys, self.values, strict=True):
            h = h + self.attention(block, rms_norm(h, block.input_norm), cos, sin, keys, values, t)
            gate, up = linear(rms_norm(h, block.post_norm), block.gate_up).chunk(2, dim=-1)
            h = h + linear(F.silu(gate) * up, block.down)
        self.filled += 1
        hidden = rms_norm(h, self.norm)
        return linear(hidden, self.head)[:, -1].float(), hidden[:, -1]

    def attention(self, block: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  keys: torch.Tensor, values: torch.Tensor, t: int) -> torch.Tensor:
        b, d, heads, kv_heads = x.size(0), self.head_dim, self.heads, self.kv_heads
        qkv = linear(x, block.qkv)  # (B, 1, (heads + 2 kv_heads) d)
        qk = qkv[..., : (heads + kv_heads) * d].view(b, heads + kv_heads, d)
        qk = qk * cos + rotate_half(qk) * sin  # q and k rotated together
        q = qk[:, :heads, None]  # (B, heads, 1, d)
        keys[:, :, t] = qk[:, heads:]
        values[:, :, t] = qkv[:, 0, (heads + kv_heads) * d :].view(b, kv_heads, d)
        out = F.scaled_dot_product_attention(q, keys[:, :, : t + 1], values[:, :, : t + 1],
                                             attn_mask=self.bias[..., : t + 1], scale=self.scaling,
                                             enable_gqa=heads != kv_heads)
        return linear(out.transpose(1, 2).reshape(b, 1, heads * d), block.out)


def rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """``LlamaRMSNorm`` as one ``F.rms_norm`` call: the same maths as the module's 7 small operations,
    ~27 vs ~39 us for 8 rows of SmolLM2 on CPU (torch's CPU kernel is itself composite)."""
    return F.rms_norm(x, x.shape[-1:], cast(torch.Tensor, norm.weight), cast(float, norm.variance_epsilon))
