"""Action scoring for many prompts at once: the summed token log-probabilities of each admissible action
string after each prompt, and the prompt's final hidden state, in two forward passes.

For B prompts (one per environment) and A action strings, the score is

    score[b, a] = log p(a | x_b) = sum_k log p(a_k | x_b, a_<k)

(GLAM, Carta et al. 2023, sec. 3.2). Instead of B * A full forwards, the B prompts run once (left-padded,
batch B; the part they all share runs once, batch 1), their KV cache is repeated A times (batch B * A),
and one more pass runs the right-padded action continuations (all but each action's last token, which
predicts nothing scored). The first token of every action is scored from the prompt pass's last logits.
Gradients reach the prompt through its keys and values (the repetition is an index whose backward sums
the copies), so this is also the training forward.
``langrl.agents.prior.action_logprobs`` is the no-grad special case B = 1.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from transformers import PreTrainedModel

from langrl.models.cache import cache_kwargs, output_cache
from langrl.models.forward import token_logprobs


class ActionScores(NamedTuple):
    """``scores`` (B, A) summed log-probs of each action after each prompt; ``hidden`` (B, H) the final
    hidden state at each prompt's last token (what a value head reads)."""

    scores: torch.Tensor
    hidden: torch.Tensor


def pad_actions(action_ids: Sequence[Sequence[int]], pad_id: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A lists of >= 1 ids -> right-padded ids (A, Ta) and their mask (A, Ta)."""
    if not action_ids or any(len(a) == 0 for a in action_ids):
        raise ValueError("every action must have at least one token")
    width = max(len(a) for a in action_ids)
    ids = torch.full((len(action_ids), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(action_ids), width, dtype=torch.long, device=device)
    for i, a in enumerate(action_ids):
        ids[i, : len(a)] = torch.tensor(list(a), device=device)
        mask[i, : len(a)] = 1
    return ids, mask


def pad_prompts(prompt_ids: Sequence[Sequence[int]], pad_id: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """B lists of >= 1 ids -> left-padded ids (B, Tp) and their mask (B, Tp): every prompt ends at Tp - 1."""
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt must have at least one token")
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(prompt_ids), width, dtype=torch.long, device=device)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):] = torch.tensor(list(p), device=device)
        mask[i, width - len(p):] = 1
    return ids, mask


SHARED_PREFIX_MIN = 8  # shorter common prefixes are not worth a separate pass


def common_prefix_length(prompt_ids: Sequence[Sequence[int]]) -> int:
    """How many leading token ids all the prompts share."""
    first, n = prompt_ids[0], min(len(p) for p in prompt_ids)
    for i in range(n):
        if any(p[i] != first[i] for p in prompt_ids):
            return i
    return n


def shared_part(model: PreTrainedModel, prompt_ids: Sequence[Sequence[int]], share_prefix: bool,
                prefix: tuple[int, Any] | None) -> tuple[int, Any]:
    """How many leading tokens the prompts share and their KV cache repeated for each prompt (0, None
    when not worth a separate pass). Each prompt keeps at least one token of its own."""
    n_prompts = len(prompt_ids)
    if prefix is not None and 0 < prefix[0] < min(len(p) for p in prompt_ids):
        shared, cache = prefix[0], copy.deepcopy(prefix[1])
    else:
        shared = common_prefix_length(prompt_ids) - 1 if share_prefix and n_prompts > 1 else 0
        if shared < SHARED_PREFIX_MIN:
            return 0, None
        head = torch.tensor([list(prompt_ids[0][:shared])], device=model.device)
        cache = output_cache(model(input_ids=head, use_cache=True, logits_to_keep=1))
    if n_prompts > 1:
        cache.batch_repeat_interleave(n_prompts)
    return shared, cache


def score_actions(model: PreTrainedModel, prompt_ids: Sequence[Sequence[int]],
                  action_ids: Sequence[Sequence[int]], pad_id: int = 0,
                  share_prefix: bool = True, prefix: tuple[int, Any] | None = None) -> ActionScores:
    """Scores (B, A) of the same A actions after each of B prompts of any lengths, and hidden (B, H).

    Prompts (B lists of ids) and actions (A lists of ids) are tokenised separately, so the scored tokens
    are exactly the action's. Left padding of the prompts is masked and position ids count real tokens
    only, so a prompt scores the same alone or in a batch; action pads sit after the real tokens and
    their log-probs are masked out. With ``share_prefix``, the leading tokens that all B prompts share
    (the chat header, the instructions and the list of actions: about a third of a BabyAI prompt) run
    once, batch 1, and their keys and values are repeated B times; each prompt's own tokens follow,
    left-padded after the shared part (the pads are masked, positions skip them). ``prefix`` ``(n,
    cache)``: the keys and values of the first ``n`` tokens, which every prompt must start with, computed
    once by the caller (copied here, never changed) and used as the shared part. Runs under the caller's
    grad mode.
    """
    device = model.device
    actions, action_mask = pad_actions(action_ids, pad_id, device)  # (A, Ta)
    n_prompts, n_actions, width = len(prompt_ids), actions.size(0), actions.size(1)
    shared, cache = shared_part(model, prompt_ids, share_prefix, prefix)
    own, own_mask = pad_prompts([p[shared:] for p in prompt_ids], pad_id, device)  # (B, Tp - shared)
    prompt_mask = torch.cat([torch.ones(n_prompts, shared, dtype=torch.long, device=device), own_mask], 1)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    out = model(input_ids=own, attention_mask=prompt_mask, position_ids=positions, **cache_kwargs(model, cache),
                use_cache=width > 1 or cache is not None, logits_to_keep=1, output_hidden_states=True)
    hidden = out.hidden_states[-1][:, -1]  # (B, H): the state after the prompt's last token
    first = out.logits[:, -1].float().log_softmax(-1)  # (B, V): the distribution of each action's 1st token
    scores = first[:, actions[:, 0]]  # (B, A)
    if width > 1:
        cache = output_cache(out)
        cache.batch_repeat_interleave(n_actions)  # row b * A + a: prompt b, to be continued by action a
        tail, tail_mask = actions[:, :-1].repeat(n_prompts, 1), action_mask[:, :-1].repeat(n_prompts, 1)
        lengths = prompt_mask.sum(-1).repeat_interleave(n_actions)  # (B * A,)
        tail_positions = lengths[:, None] + torch.arange(width - 1, device=device)
        attention = torch.cat([prompt_mask.repeat_interleave(n_actions, 0), tail_mask], 1)
        logits = model(input_ids=tail, attention_mask=attention, position_ids=tail_positions,
                       **cache_kwargs(model, cache), use_cache=True).logits  # (B * A, Ta - 1, V)
        targets, target_mask = actions[:, 1:].repeat(n_prompts, 1), action_mask[:, 1:].repeat(n_prompts, 1)
        rest = (token_logprobs(logits, targets) * target_mask).sum(-1)  # (B * A,)
        scores = scores + rest.view(n_prompts, n_actions)
    return ActionScores(scores=scores, hidden=hidden)
