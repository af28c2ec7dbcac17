"""Log-probabilities of chosen tokens, without keeping a float32 full-vocabulary log-softmax around."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from langrl.losses.packing import PACKING_ATTENTION, pack, token_pair_ratio

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

    The rows are packed (`langrl.losses.packing`): each group's prompt runs once, followed by its
    completions under a block mask, and padding is never fed. The prompt is about half the tokens of a
    chat-templated batch, so this saves most of that half in the reference pass and in the forward and
    backward of the update, and every weight gradient comes out of one product instead of one per pass.
    Only positions that predict a completion token go through the LM head (``logits_to_keep``).
    ``packed=False``, or an attention implementation that takes no custom mask, runs every row in full.
    Position ids follow the attention mask so that they match those used while sampling.
    """
    if packed and model.config._attn_implementation in PACKING_ATTENTION:
        layout = pack(input_ids, attention_mask, completion_len, token_pair_ratio(model))
        mask = layout.attention_mask(model.config._attn_implementation, model.dtype)
        out = model(input_ids=layout.input_ids, attention_mask=mask, position_ids=layout.position_ids,
                    logits_to_keep=layout.keep, output_hidden_states=hidden)
        logits = layout.select(out.logits)
        states = layout.select(out.hidden_states[-1][:, -layout.keep:]) if hidden else None
    else:
        ids, mask = input_ids[:, :-1], attention_mask[:, :-1]  # the last token predicts nothing scored
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    logits_to_keep=completion_len, output_hidden_states=hidden)
        logits = out.logits
        states = out.hidden_states[-1][:, -completion_len:] if hidden else None
    return (logits if temperature == 1.0 else logits / temperature), states
