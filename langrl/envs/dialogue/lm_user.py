"""An LM user: a simulated user whose replies a causal language model writes.

:class:`LMUser` has the interface of the rule-based users (:class:`SimulatedUserEnv`), so a model of real users
(fine-tuned on logs, or any instruct model with a persona) plugs in where a rule-based user was:

- the **model** is ``model=`` a name for :func:`langrl.models.load_lm` (the embedded ``smollm2-135m-instruct``,
  the default ``tiny`` random in-process model used by tests, a local folder or a hub id), an
  :class:`~langrl.models.lm.LM`, or a ``transformers`` causal LM with its ``tokenizer=``.
- the **prompt** is the persona (a system message) and the conversation so far, through the tokenizer's chat
  template (:func:`langrl.envs.prompts.encode_messages`; a tokenizer without one gets the plain ``role: text``
  layout) with the roles **swapped**: the agent's utterances are ``user`` turns to the LM and the LM user's own
  earlier replies ``assistant`` turns, and the generation prompt asks for the next ``assistant`` turn. A prompt
  longer than ``max_prompt_tokens`` (default: the model's context minus ``max_new_tokens``) drops its oldest
  turns, then keeps its last tokens.
- **sampling** uses :func:`langrl.rollout.tokens.sample` with ``max_new_tokens``, ``temperature`` (0 is greedy),
  ``top_p`` and ``top_k`` and a ``torch.Generator`` seeded from the environment's RNG at each ``reset``: the same
  ``reset(seed=...)`` and the same utterances give the same replies. A reply is cut at EOS, special tokens are
  dropped, and characters outside the text space (:data:`langrl.envs.text.spaces.CHARSET`) are transliterated or
  dropped, so observations stay valid.
- the **opening** is ``opening=`` when given, else the LM's first turn from the persona alone.
- the **reward** comes from ``reward_fn(history) -> (reward, done, success)``, called after every reply with the
  whole conversation (:attr:`LMUser.history`: ``{"role", "content"}`` messages from the agent's side, ``user`` for
  the LM user and ``assistant`` for the agent, the reply just written last). ``done`` ends the episode
  (terminated), ``success`` marks it a success (and ends it too). Without ``reward_fn`` every turn gets 0 and
  the episode is truncated after ``max_turns`` turns.

``persona`` is one system prompt or a list of them; each episode draws one (``info["target"]`` is the persona's
text, ``reset(options={"target": persona})`` picks it). ``candidates`` in ``info`` is the number of personas,
``gain`` is always 0 and ``kind`` is ``reply``.
"""

from __future__ import annotations

import math
import numbers
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.envs.dialogue.base import Reply, SimulatedUserEnv, check_float, check_int
from langrl.envs.prompts import Message, encode_messages
from langrl.envs.text.spaces import CHARSET, MAX_CHARS
from langrl.errors import ConfigError
from langrl.models.lm import LM
from langrl.rollout.tokens import SamplingConfig, sample

RewardFn = Callable[[list[dict[str, str]]], tuple[float, bool, bool]]
DEFAULT_PERSONA = (
    "You are a user talking to a help-desk assistant. Your laptop cannot connect to the office Wi-Fi since this "
    "morning. Describe your problem in one or two short sentences, answer the assistant's questions, and say "
    "'thank you, that solved it' once the problem is solved."
)
SWAP = {"user": "assistant", "assistant": "user"}
ALLOWED = frozenset(CHARSET)
EMBEDDED_USER_MODEL = "smollm2-135m-instruct"  # the embedded instruct model to use as a real LM user


def to_text_space(text: str, max_chars: int = MAX_CHARS) -> str:
    """``text`` made a valid observation: accents and typographic quotes transliterated to ASCII, tabs and
    carriage returns made spaces, other characters outside :data:`CHARSET` dropped, at most ``max_chars``."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = unicodedata.normalize("NFKD", text).replace("\t", " ").replace("\r", " ")
    return "".join(c for c in text if c in ALLOWED).strip()[:max_chars]


def swapped_messages(persona: str, history: Sequence[dict[str, str]]) -> list[Message]:
    """The LM user's prompt messages: ``persona`` as the system message, then ``history`` (from the agent's side)
    with ``user`` and ``assistant`` swapped, so that the LM speaks as the user."""
    return [{"role": "system", "content": persona},
            *({"role": SWAP[m["role"]], "content": m["content"]} for m in history)]


def no_reward(history: list[dict[str, str]]) -> tuple[float, bool, bool]:
    """The default reward: 0 every turn, never done (the episode is truncated at ``max_turns``)."""
    return 0.0, False, False


def check_personas(persona: Any) -> list[str]:
    """``persona`` as a non-empty list of non-empty system prompts, else a `ConfigError`."""
    personas = [persona] if isinstance(persona, str) else persona
    if not isinstance(personas, Sequence) or not personas or not all(
            isinstance(p, str) and p.strip() for p in personas):
        raise ConfigError(f"persona = {persona!r}: must be a system prompt or a non-empty list of them; give e.g. "
                          f"persona='You are a customer whose printer shows error E3.'")
    return list(personas)


def resolve_lm(model: Any, tokenizer: PreTrainedTokenizerBase | None, device: str, model_seed: int) -> LM:
    """The LM user's model: a name for :func:`langrl.models.load_lm`, an :class:`LM`, or a causal LM with its
    tokenizer."""
    if isinstance(model, str):
        from langrl.models.loading import load_lm

        return load_lm(model, device=device, seed=model_seed)
    if isinstance(model, LM):
        return model
    if isinstance(model, PreTrainedModel):
        if tokenizer is None:
            raise ConfigError(f"model = {type(model).__name__}(...): a model object needs its tokenizer; give "
                              f"tokenizer=AutoTokenizer.from_pretrained(...) or a name such as "
                              f"model='{EMBEDDED_USER_MODEL}'")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return LM(model=model, tokenizer=tokenizer, name=type(model).__name__)
    raise ConfigError(f"model = {model!r}: must be a model name, an LM or a transformers causal LM; give e.g. "
                      f"model='{EMBEDDED_USER_MODEL}' or model='tiny'")


def eos_ids(lm: LM) -> list[int]:
    """Every token that ends a reply: the tokenizer's EOS and the model's generation-config EOS tokens."""
    ids: list[int] = []
    config = getattr(lm.model, "generation_config", None)
    for value in (lm.tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        for i in [value] if isinstance(value, int) else list(value or []):
            if i not in ids:
                ids.append(int(i))
    return ids


class LMUser(SimulatedUserEnv):
    """A simulated user played by a causal LM with a persona (see the module docstring)."""

    def __init__(self, persona: str | Sequence[str] = DEFAULT_PERSONA, model: Any = "tiny",
                 tokenizer: PreTrainedTokenizerBase | None = None, *, opening: str | None = None,
                 reward_fn: RewardFn | None = None, max_turns: int = 10, max_new_tokens: int = 48,
                 temperature: float = 0.7, top_p: float = 1.0, top_k: int = 0, max_prompt_tokens: int | None = None,
                 device: str = "auto", model_seed: int = 0):
        super().__init__(max_turns=max_turns, question_cost=0.0)
        self.personas = check_personas(persona)
        if opening is not None and not isinstance(opening, str):
            raise ConfigError(f"opening = {opening!r}: must be text or None (the LM writes the opening); give e.g. "
                              f"opening='Hi, my Wi-Fi does not work.'")
        self.fixed_opening = None if opening is None else to_text_space(opening)
        if reward_fn is not None and not callable(reward_fn):
            raise ConfigError(f"reward_fn = {reward_fn!r}: must be a function history -> (reward, done, success); "
                              f"give e.g. reward_fn=lambda h: (0.0, False, False)")
        self.reward_fn: RewardFn = reward_fn or no_reward
        self.sampling = self.sampling_config(max_new_tokens, temperature, top_p, top_k)
        self.lm = resolve_lm(model, tokenizer, device, check_int("model_seed", model_seed, 0, 0))
        self.max_prompt_tokens = self.prompt_budget(max_prompt_tokens)
        self.eos = eos_ids(self.lm)
        self.device = next(self.lm.model.parameters()).device
        self.generator = torch.Generator(device=self.device)
        self.history: list[dict[str, str]] = []

    @staticmethod
    def sampling_config(max_new_tokens: int, temperature: float, top_p: float, top_k: int) -> SamplingConfig:
        """The checked sampling settings; temperature 0 is greedy (top-k 1)."""
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1, 48)
        temperature = check_float("temperature", temperature, 0.7, non_negative=True)
        top_p = check_float("top_p", top_p, 1.0, non_negative=True)
        if top_p > 1:
            raise ConfigError(f"top_p = {top_p!r}: must be in [0, 1]; give e.g. top_p=0.9 (1 disables the filter)")
        top_k = check_int("top_k", top_k, 0, 0)
        if temperature == 0:
            return SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, top_k=1)
        return SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)

    def prompt_budget(self, max_prompt_tokens: int | None) -> int:
        """The longest prompt in tokens: ``max_prompt_tokens``, else the model's context minus the reply."""
        if max_prompt_tokens is not None:
            return check_int("max_prompt_tokens", max_prompt_tokens, 1, 1024)
        context = getattr(self.lm.model.config, "max_position_embeddings", None)
        if not isinstance(context, int):
            return 2048
        return max(1, context - self.sampling.max_new_tokens)

    @property
    def target_names(self) -> list[str]:
        return self.personas

    @property
    def persona(self) -> str:
        """The current episode's persona."""
        assert self.target is not None, "reset first"
        return self.personas[self.target]

    def begin(self) -> None:
        self.history = []
        self.generator.manual_seed(int(self.np_random.integers(2**62)))

    def opening(self) -> str:
        text = self.fixed_opening if self.fixed_opening is not None else self.generate(self.history)
        self.history.append({"role": "user", "content": text})
        return text

    def prompt_text(self, history: Sequence[dict[str, str]]) -> str:
        """The prompt for the reply after ``history`` as text (the chat template's rendering), for inspection."""
        return str(self.lm.tokenizer.decode(self.prompt_ids(history)))

    def prompt_ids(self, history: Sequence[dict[str, str]]) -> list[int]:
        """The prompt's token ids for the reply after ``history``: persona and swapped turns, oldest turns
        dropped (then the first tokens) when longer than ``max_prompt_tokens``."""
        talk = list(history)
        while True:
            ids = encode_messages([swapped_messages(self.persona, talk)], self.lm.tokenizer, chat=True)[0]
            if len(ids) <= self.max_prompt_tokens or len(talk) <= 1:
                return ids[-self.max_prompt_tokens:]
            talk = talk[1:]

    def generate(self, history: Sequence[dict[str, str]]) -> str:
        """The LM user's next reply after ``history``, sampled with the episode's generator."""
        ids = torch.tensor([self.prompt_ids(history)], dtype=torch.long, device=self.device)
        tokenizer = self.lm.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        rollout = sample(self.lm.model, ids, torch.ones_like(ids), self.sampling, self.eos, pad, self.generator)
        tokens = rollout.completion_ids[0, :int(rollout.completion_mask[0].sum())].tolist()
        if tokens and tokens[-1] in self.eos:
            tokens = tokens[:-1]
        return to_text_space(str(tokenizer.decode(tokens, skip_special_tokens=True)))

    def respond(self, utterance: str, target: int) -> Reply:
        """Record the agent's utterance, sample the LM user's reply and score the conversation."""
        self.history.append({"role": "assistant", "content": utterance})
        text = self.generate(self.history)
        self.history.append({"role": "user", "content": text})
        reward, done, success = self.score()
        return Reply(text, solved=success, ends=done, kind="reply", reward=reward)

    def score(self) -> tuple[float, bool, bool]:
        """``reward_fn`` on a copy of the history, checked: (reward, done, success)."""
        result = self.reward_fn([dict(m) for m in self.history])
        if not (isinstance(result, tuple) and len(result) == 3):
            raise ConfigError(f"reward_fn returned {result!r}: must return (reward, done, success); give e.g. "
                              f"lambda history: (1.0, True, True) when the user is satisfied")
        reward, done, success = result
        if isinstance(reward, bool) or not isinstance(reward, numbers.Real) or not math.isfinite(reward):
            raise ConfigError(f"reward_fn returned reward {reward!r}: must be a finite number; return e.g. "
                              f"(0.0, False, False)")
        return float(reward), bool(done), bool(success)
