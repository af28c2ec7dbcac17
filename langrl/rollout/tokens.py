"""Batched sampling with a KV cache.

``sample`` is a pure function of a policy snapshot (the model's weights), the prompts and a seeded
generator, so it can run in a separate worker. The prompts are encoded once: their forward pass fills a
KV cache of batch P, which is then repeated G times, so G completions per prompt share the prompt's
computation instead of recomputing it (HF ``generate`` with ``num_return_sequences`` repeats the prompt
before the prefill).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import DynamicCache, PreTrainedModel

from langrl.models.cache import cache_kwargs, output_cache
from langrl.models.forward import token_logprobs
from langrl.models.packed import packed_linears
from langrl.rollout.llama_decode import LlamaDecoder, supports


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are drawn. ``top_k = 0`` and ``top_p = 1`` disable those filters."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    group_size: int = 1


@dataclass
class TokenRollout:
    """Sampled completions for P prompts x G completions each, B = P * G rows in prompt-major order.

    prompt_ids:      (B, Tp) left-padded prompt tokens
    prompt_mask:     (B, Tp) 1 on real prompt tokens
    completion_ids:  (B, Tc) right-padded sampled tokens (pad after EOS)
    completion_mask: (B, Tc) 1 on sampled tokens up to and including EOS
    logprobs:        (B, Tc) log-prob of each sampled token under the sampling policy (logits / T, before
                     top-k/top-p truncation, as in TRL/OpenRLHF), 0 where masked. These are the old-policy
                     log-probs of the update: no second pass is needed for them.
    values:          (B, Tc) V(s_t) of the state each token was chosen in, when a value head was given
    context_mask:    (B, Tc) 1 on every real token after the prompt, when some of them are not the policy's
                     (a multi-turn conversation's user turns: attended to, not trained on); default
                     ``completion_mask``
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor | None = None
    context_mask: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        """(B, Tp + Tc) prompt and completion side by side."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, Tp + Tc): 1 on every real token."""
        after = self.completion_mask if self.context_mask is None else self.context_mask
        return torch.cat([self.prompt_mask, after], dim=1)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits (N, V) outside the top-k set and outside the smallest top-p nucleus with -inf."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p; the top token always stays (its mass
        # before is 0, which is ">= top_p" when top_p <= 0, so it is kept explicitly: top_p = 0 is greedy).
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` (N, V), drawn by inverting the cumulative distribution: (N,).

    ``torch.multinomial`` draws an exponential variate for every vocabulary entry (N x V random numbers,
    ~12 ms of a ~120 ms decode step for 8 x 49k on one CPU core); inverting the CDF needs N uniforms.
    The CDF is summed in float64 and scaled by its total, so rounding neither biases the draw nor lets
    it land on a zero-probability entry (those add nothing to the CDF, and ``right=True`` skips them).
    """
    cdf = probs.cumsum(-1, dtype=torch.float64)
    u = torch.rand(probs.size(0), 1, generator=generator, device=probs.device, dtype=torch.float64)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp_(max=probs.size(-1) - 1)


def sample(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    config: SamplingConfig,
    eos_token_id: int | list[int] | None,
    pad_token_id: int,
    generator: torch.Generator | None = None,
    value_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TokenRollout:
    """Draw ``config.group_size`` completions for each of the P left-padded prompts (P, Tp).

    Each sequence stops at its first EOS; the loop ends when all have stopped or after
    ``max_new_tokens``. Returns a :class:`TokenRollout` with B = P * G rows. With ``value_head`` (final hidden
    state -> value) the values of the visited states are recorded on the way, again with no extra pass.
    """
    # The lean Llama decoder packs its own (fused) weights; other models decode through packed layers.
    lean = supports(model)
    with torch.inference_mode(), nullcontext() if lean else packed_linears(model):
        fields = sample_tensors(model, prompt_ids, prompt_mask, config, eos_token_id, pad_token_id,
                                generator, value_head, lean)
    # Inference tensors cannot be saved for backward; these small copies can (the update gathers with them).
    # Only the last field (values) may be None, and it takes None.
    return TokenRollout(*cast(Any, (None if t is None else t.clone() for t in fields)))


def sample_tensors(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    config: SamplingConfig,
    eos_token_id: int | list[int] | None,
    pad_token_id: int,
    generator: torch.Generator | None,
    value_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    lean: bool = False,
) -> tuple[torch.Tensor | None, ...]:
    """The sampling loop of :func:`sample`; returns the TokenRollout's fields in order. ``lean``: decode
    with :class:`LlamaDecoder` (the model must be one that `supports` accepts)."""
    g = config.group_size
    # No EOS (the toy model): every completion runs to max_new_tokens.
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    eos = torch.tensor(eos_ids, dtype=torch.long, device=prompt_ids.device)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    hidden = value_head is not None
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1, output_hidden_states=hidden)
    cache = output_cache(out)
    if g > 1:
        cache.batch_repeat_interleave(g)
    logits = out.logits[:, -1].float().repeat_interleave(g, dim=0)
    state = out.hidden_states[-1][:, -1].repeat_interleave(g, dim=0) if hidden else None
    mask = prompt_mask.repeat_interleave(g, dim=0)
    next_pos = positions[:, -1:].repeat_interleave(g, dim=0) + 1
    b = logits.size(0)
    done = torch.zeros(b, dtype=torch.bool, device=logits.device)
    tokens, logps, alive, values = [], [], [], []
    decoder = LlamaDecoder(model, cache, mask, config.max_new_tokens) if lean else None
    for _ in range(config.max_new_tokens):
        scaled = logits / config.temperature if config.temperature != 1.0 else logits
        probs = filter_logits(scaled, config.top_k, config.top_p).softmax(-1)
        token = draw(probs, generator)
        token = token.masked_fill(done, pad_token_id)
        tokens.append(token)
        logps.append(token_logprobs(scaled, token))
        alive.append(~done)
        if value_head is not None:
            values.append(value_head(cast(torch.Tensor, state)))  # a state is kept whenever value_head is given
        done = done | torch.isin(token, eos)
        if bool(done.all()):
            break
        if decoder is not None:
            logits, state = decoder.step(token, next_pos)
        else:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos,
                        **cache_kwargs(model, cache), use_cache=True, output_hidden_states=hidden)
            cache, logits = output_cache(out), out.logits[:, -1].float()
            state = out.hidden_states[-1][:, -1] if hidden else None
        next_pos = next_pos + 1
    completion_mask = torch.stack(alive, dim=1).to(prompt_mask.dtype)
    return (
        prompt_ids.repeat_interleave(g, dim=0),
        prompt_mask.repeat_interleave(g, dim=0),
        torch.stack(tokens, dim=1),
        completion_mask,
        torch.stack(logps, dim=1) * completion_mask,
        torch.stack(values, dim=1) * completion_mask if values else None,
    )
