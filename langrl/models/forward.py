"""Log-probabilities of chosen tokens, without keeping a float32 full-vocabulary log-softmax around."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel

from langrl.models.packing import PACKING_ATTENTION, pack, token_pair_ratio

CHUNK_ROWS = 1024


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] for logits (..., V) and tokens (...) -> (...).

    Computed as ``logit[token] - logsumexp(logits)`` in row chunks: the full (N, V) log-softmax is never
    materialised, and half-precision logits are upcast to float32 one chunk at a time.
    """
    flat_logits = logits.reshape(-1, logits.size(-1))
    flat_tokens = tokens.reshape(-1)
    out = [
        chunk.gather(-1, toks[:, None]).squeeze(-1).float() - torch.logsumexp(chunk.float(), dim=-1)
        for chunk, toks in zip(flat_logits.split(CHUNK_ROWS), flat_tokens.split(CHUNK_ROWS), strict=True)
    ]
    return torch.cat(out).reshape(tokens.shape)


@torch.no_grad()
def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) for logits (..., V) -> (...), chunked like ``token_logprobs``."""
    flat = logits.reshape(-1, logits.size(-1))
    out = []
    for chunk in flat.split(CHUNK_ROWS):
        logp = chunk.float().log_softmax(-1)
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out).reshape(logits.shape[:-1])


def completion_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_len: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Logits (B, Tc, V) that predict the last ``completion_len`` tokens of left-padded ``input_ids``."""
    return completion_forward(model, input_ids, attention_mask, completion_len, temperature)[0]


def completion_forward(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_len: int,
    temperature: float = 1.0,
    hidden: bool = False,
    packed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (B, Tc, V) for the completion positions and, with ``hidden``, the final hidden states
    (B, Tc, H) at the same positions (the states from which each completion token is chosen).

    The rows are packed (`langrl.models.packing`): each group's prompt runs once, followed by its
    completions under a block mask, and padding is never fed. The prompt is about half the tokens of a
    chat-templated batch, so this saves most of that half in the reference pass and in the forward and
    backward of the update, and every weight gradient comes out of one product instead of one per pass.
    Only positions that predict a completion token go through the LM head (``logits_to_keep``).
    ``packed=False``, or an attention implementation that takes no custom mask, runs every row in full.
    Position ids follow the attention mask so that they match those used while sampling.
    """
    head = model.get_output_embeddings()
    if packed and head is not None and model.config._attn_implementation in PACKING_ATTENTION:
        layout = pack(input_ids, attention_mask, completion_len, token_pair_ratio(model))
        mask = layout.attention_mask(model.config._attn_implementation, model.dtype)
        embeds = tied_input_embeddings(model, layout.input_ids)
        inputs = {"input_ids": layout.input_ids} if embeds is None else {"inputs_embeds": embeds}
        # The LM head gets the (B, Tc, H) states of the scored positions, not the (R, keep, H) block:
        # selecting before the vocabulary-sized product spares a (B, Tc, V) copy and its backward.
        selecting = head.register_forward_pre_hook(lambda module, args: (layout.select(args[0]), *args[1:]))
        try:
            out = model(**inputs, attention_mask=mask, position_ids=layout.position_ids,
                        logits_to_keep=layout.keep, output_hidden_states=hidden)
        finally:
            selecting.remove()
        logits = out.logits
        states = layout.select(out.hidden_states[-1][:, -layout.keep:]) if hidden else None
    else:
        ids, mask = input_ids[:, :-1], attention_mask[:, :-1]  # the last token predicts nothing scored
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    logits_to_keep=completion_len, output_hidden_states=hidden)
        logits = out.logits
        states = out.hidden_states[-1][:, -completion_len:] if hidden else None
    return (logits if temperature == 1.0 else logits / temperature), states


def tied_input_embeddings(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor | None:
    """Input embeddings of ``ids`` whose gradient is added in place into the tied weight's gradient.

    When the input embedding and the LM head share one trainable weight (SmolLM2, Llama 3.2 1B...),
    autograd builds a dense vocabulary-sized gradient for the lookup (zero-filled, 113 MB on SmolLM2),
    then adds it to the head's into a third such tensor. Here the lookup is a leaf outside the graph,
    and a hook adds its gradient rows into ``weight.grad`` (whose head part is accumulated first:
    ``AccumulateGrad`` runs as soon as it can), as ``nn.Embedding`` would, ``padding_idx`` rows left
    out. Only with ``backward()``, which every update here uses. None where this does not apply: no
    gradient, untied, frozen, or an embedding other than a plain ``nn.Embedding``.
    """
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    weight = cast(torch.Tensor, emb.weight)
    if not (torch.is_grad_enabled() and weight.requires_grad and type(emb) is nn.Embedding
            and head is not None and head.weight is weight
            and emb.max_norm is None and not emb.scale_grad_by_freq and not emb.sparse):
        return None
    index = ids.reshape(-1)
    keep = None if emb.padding_idx is None else (index != emb.padding_idx)[:, None]

    def accumulate(grad: torch.Tensor) -> None:
        rows = grad.reshape(-1, grad.size(-1))
        rows = rows if keep is None else rows * keep
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        weight.grad.index_add_(0, index, rows.to(weight.grad.dtype))

    embeds = F.embedding(ids, weight.detach()).requires_grad_()
    embeds.register_hook(accumulate)
    return embeds
