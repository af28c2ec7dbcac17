"""Log-probabilities of chosen tokens, without keeping a float32 full-vocabulary log-softmax around."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (B, Tc, V) for the completion positions and, with ``hidden``, the final hidden states
    (B, Tc, H) at the same positions (the states from which each completion token is chosen).

    Only the completion positions go through the LM head (``logits_to_keep``): the prompt's
    full-vocabulary projection is never computed. Position ids follow the attention mask so that they
    match those used while sampling.
    """
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                use_cache=False, logits_to_keep=completion_len + 1, output_hidden_states=hidden)
    states = out.hidden_states[-1][:, -completion_len - 1:-1] if hidden else None
    return out.logits[:, :-1] / temperature, states
