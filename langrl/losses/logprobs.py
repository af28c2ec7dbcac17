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
    share_prompt: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (B, Tc, V) for the completion positions and, with ``hidden``, the final hidden states
    (B, Tc, H) at the same positions (the states from which each completion token is chosen).

    Only the completion positions go through the LM head (``logits_to_keep``): the prompt's
    full-vocabulary projection is never computed, and the last token (which predicts nothing scored) is
    not fed. Rows that repeat the prompt of the row before them (the G completions of a group) share it:
    the prompt runs once per group, its KV cache is expanded to the rows, and only the completions run
    per row. The prompt is about half the tokens of a chat-templated batch, so this saves most of that
    half in the reference pass and in the forward and backward of the update; gradients flow to the
    shared prompt through its keys and values (the expansion is an index, whose backward sums the rows).
    ``share_prompt=False`` runs every row in full (for comparisons). Position ids follow the attention
    mask so that they match those used while sampling.
    """
    ids, mask = input_ids[:, :-1], attention_mask[:, :-1]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    split = ids.size(1) - completion_len  # the prompt minus its last token: the part a group can share
    cache = None
    if share_prompt and split > 0:
        first, index = repeated_rows(ids[:, :split], mask[:, :split])
        if first.numel() < ids.size(0):
            prefix = model(input_ids=ids[first, :split], attention_mask=mask[first, :split],
                           position_ids=positions[first, :split], use_cache=True, logits_to_keep=1)
            cache = prefix.past_key_values
            cache.batch_select_indices(index)
            ids, positions = ids[:, split:], positions[:, split:]
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=cache is not None, logits_to_keep=completion_len, output_hidden_states=hidden)
    states = out.hidden_states[-1][:, -completion_len:] if hidden else None
    logits = out.logits if temperature == 1.0 else out.logits / temperature
    return logits, states


def repeated_rows(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of consecutive identical rows of (ids, mask), each (B, T): (first row of each run (U,),
    run of each row (B,)). ``rows[first][index]`` equals ``rows``."""
    same = ((ids[1:] == ids[:-1]) & (mask[1:] == mask[:-1])).all(-1)
    starts = torch.cat([torch.ones_like(same[:1]), ~same])
    return starts.nonzero().squeeze(-1), starts.cumsum(0) - 1
