"""Multi-turn episodes: an LM talks with a text environment (a simulated user) turn by turn.

A conversation is kept as token ids, never re-tokenised: the policy's sampled tokens go in as sampled,
and each user turn is appended as the chat template renders it (:class:`TurnRenderer`). The tokens the
learner trains on are exactly those the policy sampled (``policy_mask``); the environment's tokens are
context only. As a TokenRollout, a batch of conversations is the opening prompt (left-padded) and
everything after it (right-padded), with ``completion_mask`` on the policy's tokens alone, so the same
packed scoring, KL and losses as single-turn training apply unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import gymnasium as gym
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.envs.prompts import left_pad
from langrl.rollout.tokens import SamplingConfig, TokenRollout, sample

Message = dict[str, str]
PROBE = "\x00probe\x00"  # a stand-in assistant message, to find where the template puts one


class TurnRenderer:
    """The chat template applied one turn at a time, as token ids.

    ``opening`` renders the system prompt and the first user message with the generation prompt;
    ``user_turn`` renders what follows a finished policy turn: the rest of the template's closing of that
    turn (after the EOS token the policy sampled, or the EOS itself when the turn was cut at the token
    limit), the user's message and the next generation prompt. Both are string differences of whole
    renderings, so the concatenation equals the template's rendering of the whole conversation.
    Tokenizers without a chat template use a plain ``User: ... / Assistant:`` format.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, system: str | None = None, chat: bool = True):
        self.tokenizer = tokenizer
        self.system = [{"role": "system", "content": system}] if system else []
        self.chat = bool(chat and tokenizer.chat_template)
        self.eos_text = cast(str, tokenizer.eos_token or "")

    def render(self, messages: list[Message], generation_prompt: bool) -> str:
        """The conversation as text: the chat template, or the plain format."""
        if self.chat:
            return cast(str, self.tokenizer.apply_chat_template(
                self.system + messages, tokenize=False, add_generation_prompt=generation_prompt))
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in self.system + messages]
        return "\n".join(lines) + ("\nAssistant:" if generation_prompt else "")

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def opening(self, user: str) -> list[int]:
        """Token ids of the system prompt and the first user message, ready for the policy's first turn."""
        text = self.render([{"role": "user", "content": user}], generation_prompt=True)
        bos = self.tokenizer.bos_token
        if not self.chat and bos and self.tokenizer("x")["input_ids"][:1] == [self.tokenizer.bos_token_id]:
            text = bos + text  # the plain format starts as the tokenizer would start any text
        return self.encode(text)

    def user_turn(self, user: str, ended_with_eos: bool) -> list[int]:
        """Token ids that close the policy's last turn and add the user's reply and a generation prompt."""
        head = [{"role": "user", "content": "u"}, {"role": "assistant", "content": PROBE}]
        before = self.render(head, generation_prompt=False)
        after = self.render([*head, {"role": "user", "content": user}], generation_prompt=True)
        if not after.startswith(before):
            raise ValueError("the chat template renders a conversation differently once a turn is added; "
                             "multi-turn training needs a template whose renderings extend each other")
        closing = before[before.index(PROBE) + len(PROBE):]  # what the template writes after the message
        if self.eos_text and closing.startswith(self.eos_text) and ended_with_eos:
            closing = closing[len(self.eos_text):]  # the policy sampled it: it is already in the tokens
        return self.encode(closing + after[len(before):])


@dataclass
class Conversation:
    """One episode as tokens: the opening prompt, then policy and user tokens in turn."""

    opening: list[int]
    ids: list[int] = field(default_factory=list)  # after the opening
    policy_mask: list[int] = field(default_factory=list)  # 1 on tokens the policy sampled
    logprobs: list[float] = field(default_factory=list)  # their sampling log-probs (0 on user tokens)
    messages: list[Message] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)  # one per policy turn
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # the environment's last info

    @property
    def context(self) -> list[int]:
        return self.opening + self.ids

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))


def start(envs: Sequence[gym.Env], renderer: TurnRenderer, seeds: Sequence[int],
          options: Sequence[dict[str, Any] | None]) -> list[Conversation]:
    """Reset each environment and render its opening message."""
    out = []
    for env, seed, option in zip(envs, seeds, options, strict=True):
        text, info = env.reset(seed=seed, options=option)
        out.append(Conversation(opening=renderer.opening(text), messages=[{"role": "user", "content": text}],
                                info=dict(info)))
    return out


def policy_turn(policy: PreTrainedModel, renderer: TurnRenderer, conversations: list[Conversation],
                sampling: SamplingConfig, generator: torch.Generator) -> list[tuple[list[int], list[float], str]]:
    """Sample one utterance for each conversation: its tokens, their log-probs and its text (no EOS)."""
    tokenizer = renderer.tokenizer
    device = next(policy.parameters()).device
    ids, mask = left_pad([c.context for c in conversations], tokenizer.pad_token_id, device)
    rollout = sample(policy, ids, mask, SamplingConfig(**{**sampling.__dict__, "group_size": 1}),
                     tokenizer.eos_token_id, tokenizer.pad_token_id, generator)
    out = []
    lengths = rollout.completion_mask.sum(-1).tolist()
    for row, logp, length in zip(rollout.completion_ids.tolist(), rollout.logprobs.tolist(), lengths, strict=True):
        tokens = row[:int(length)]
        text_ids = tokens[:-1] if tokens and tokens[-1] == tokenizer.eos_token_id else tokens
        out.append((tokens, logp[:int(length)], cast(str, tokenizer.decode(text_ids, skip_special_tokens=False))))
    return out


def run_conversations(policy: PreTrainedModel, renderer: TurnRenderer, envs: Sequence[gym.Env],
                      seeds: Sequence[int], options: Sequence[dict[str, Any] | None], sampling: SamplingConfig,
                      generator: torch.Generator, max_context: int = 2048,
                      on_turn: Callable[[int], None] | None = None) -> list[Conversation]:
    """Play one episode in each environment, all conversations advancing together, one turn at a time.

    An episode ends when its environment says so (terminated or truncated, e.g. its turn limit) or when its
    context would exceed ``max_context`` tokens (then it is truncated: ``info["context_full"]``).
    """
    conversations = start(envs, renderer, seeds, options)
    turn = 0
    while active := [i for i, c in enumerate(conversations) if not c.done]:
        replies = policy_turn(policy, renderer, [conversations[i] for i in active], sampling, generator)
        for i, (tokens, logp, text) in zip(active, replies, strict=True):
            step(conversations[i], envs[i], renderer, tokens, logp, text, max_context, sampling.max_new_tokens)
        turn += 1
        if on_turn is not None:
            on_turn(turn)
    return conversations


def step(c: Conversation, env: gym.Env, renderer: TurnRenderer, tokens: list[int], logp: list[float], text: str,
         max_context: int, max_new_tokens: int) -> None:
    """Append the policy's utterance, let the environment answer, append its reply unless the episode ended."""
    c.ids += tokens
    c.policy_mask += [1] * len(tokens)
    c.logprobs += logp
    c.messages.append({"role": "assistant", "content": text})
    reply, reward, terminated, truncated, info = env.step(text)
    c.rewards.append(float(reward))
    c.info = dict(info)
    if terminated or truncated:
        c.done = True
        return
    ended = bool(tokens) and tokens[-1] == renderer.tokenizer.eos_token_id
    user = renderer.user_turn(str(reply), ended)
    if len(c.context) + len(user) + max_new_tokens > max_context:
        c.done, c.info["context_full"] = True, True
        return
    c.ids += user
    c.policy_mask += [0] * len(user)
    c.logprobs += [0.0] * len(user)
    c.messages.append({"role": "user", "content": str(reply)})


def as_rollout(conversations: Sequence[Conversation], pad_id: int, device: torch.device) -> TokenRollout:
    """The conversations as one TokenRollout: openings left-padded, the rest right-padded, and
    ``completion_mask`` 1 on the policy's tokens only (the user's are attended to, never trained on)."""
    prompt_ids, prompt_mask = left_pad([c.opening for c in conversations], pad_id, device)
    width = max(len(c.ids) for c in conversations)

    def right(rows: list[list[Any]], fill: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=dtype, device=device)

    completion_ids = right([c.ids for c in conversations], pad_id, torch.long)
    policy_mask = right([c.policy_mask for c in conversations], 0, torch.long)
    attention = right([[1] * len(c.ids) for c in conversations], 0, torch.long)
    logprobs = right([c.logprobs for c in conversations], 0.0, torch.float32)
    return TokenRollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                        completion_mask=policy_mask, logprobs=logprobs, context_mask=attention)
