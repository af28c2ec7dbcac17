"""An LM as an exploration prior: its distribution over admissible action strings given a text state.

The score of action ``a`` (tokens ``a_1..a_n``) after a prompt ``x`` is the sum of its token
log-probabilities, ``log p(a | x) = sum_k log p(a_k | x, a_<k)``, and the prior is the softmax of these
scores over the admissible actions (GLAM, Carta et al. 2023, sec. 3; SayCan, Ahn et al. 2022, scores
skills the same way). The prompt is run once and its KV cache shared by all actions, so A actions cost
one prompt pass plus one pass over the A short action strings. The part of the prompt before the
observation (the chat header and the list of actions) is the same for every observation: its keys and
values are computed once and reused, so a call runs the model over the observation's tokens only.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from transformers import PreTrainedModel

from langrl.agents.cache import LRUCache
from langrl.agents.exploration import log_softmax
from langrl.agents.scoring import score_actions
from langrl.agents.shared_lm import resolve_lm
from langrl.config.agent import PRIOR_TEMPLATE
from langrl.errors import ConfigError
from langrl.models.cache import output_cache
from langrl.models.loading import LM


@torch.no_grad()
def action_logprobs(model: PreTrainedModel, prompt_ids: Sequence[int], action_ids: Sequence[Sequence[int]],
                    pad_id: int = 0, prefix: tuple[int, Any] | None = None) -> torch.Tensor:
    """Summed log-probabilities (A,) of each action's tokens following one prompt's tokens (Tp,):
    `score_actions` for a batch of one, without gradients. ``prefix`` ``(n, cache)``: the KV cache of the
    first ``n`` prompt tokens (copied, never changed), so that only the rest of the prompt is run."""
    return score_actions(model, [prompt_ids], action_ids, pad_id, prefix=prefix).scores[0]


def check_actions(actions: Sequence[str]) -> list[str]:
    """``actions`` as a list of non-empty strings, else a `ConfigError` (a lone string is one action, not a list)."""
    if isinstance(actions, str) or not isinstance(actions, Sequence) or not actions or not all(
            isinstance(a, str) and a for a in actions):
        raise ConfigError(f"actions = {actions!r}: give a non-empty list of action strings, e.g. "
                          f"['push left', 'push right']")
    return list(actions)


class LMActionPrior:
    """``p(a | observation)`` over a fixed list of action strings, from a causal LM; cached by text.

    The prompt is ``template`` filled with ``observation`` and ``actions`` (the list joined with commas);
    with ``chat`` (default: when the tokenizer has a chat template) it becomes the user turn of a chat,
    and the actions are scored as the start of the assistant's reply. Otherwise each action is scored
    after ``sep`` (a space: ``"...action: go forward"``). ``temperature`` > 1 flattens the prior.

    ``calibrate``: subtract the scores the LM gives the actions after a content-free observation
    (``null_observation``, "N/A"), i.e. divide each action's probability by its probability without
    information ("contextual calibration", Zhao et al. 2021, "Calibrate Before Use"): the prior is then
    uniform on an uninformative observation and keeps only what the observation changes. A raw LM
    prefers some action strings whatever the state (on BabyAI GoToLocal, SmolLM2-135M-Instruct gives
    ``pick up`` 54% and ``go forward`` 0.7% on average); calibration did not make that model's prior
    explore better than uniform either (benchmarks/RESULTS_agents.md).

    ``lm`` is an `LM` or a name (loaded once per process). The prior pickles as its :attr:`spec` (the
    model's name, the actions and the settings above), so an SB3 agent saved with it holds no weights and
    its ``load`` reloads the model by name. A prior built on an `LM` object whose weights differ from what
    its name loads (a fine-tuned model in memory, ``tiny_lm(seed=3)``) would come back with the named
    weights: save such a model with ``save_pretrained`` and give the folder as ``lm``.
    """

    def __init__(self, lm: LM | str, actions: Sequence[str], template: str = PRIOR_TEMPLATE,
                 chat: bool | None = None, sep: str = " ", temperature: float = 1.0,
                 cache_size: int = 100_000, calibrate: bool = False, null_observation: str = "N/A"):
        self.lm = resolve_lm(lm)
        self.actions = check_actions(actions)
        self.spec: dict[str, Any] = {
            "lm": self.lm.name, "actions": list(self.actions), "template": template, "chat": chat, "sep": sep,
            "temperature": temperature, "cache_size": cache_size, "calibrate": calibrate,
            "null_observation": null_observation,
        }
        self.template = template
        self.chat = bool(self.lm.tokenizer.chat_template) if chat is None else chat
        self.temperature = temperature
        self.calibrate = calibrate
        self.null_observation = null_observation
        prefix = "" if self.chat else sep
        self.action_ids = [self.lm.tokenizer(prefix + a, add_special_tokens=False)["input_ids"]
                           for a in self.actions]
        self.cache: LRUCache[str, np.ndarray] = LRUCache(cache_size)
        self.prefix_ids: list[int] | None = None
        self.prefix_cache: Any = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LMActionPrior:
        """The prior of a spec: ``{"lm": name, "actions": [...]}`` and any other constructor argument."""
        allowed = list(inspect.signature(cls).parameters)
        unknown = sorted(set(spec) - set(allowed))
        missing = [key for key in ("lm", "actions") if key not in spec]
        if unknown or missing:
            wrong = f"unknown key(s) {unknown}" if unknown else f"missing {missing}"
            raise ConfigError(f"prior = {dict(spec)!r}: {wrong}; give e.g. dict(lm='smollm2-135m-instruct', "
                              f"actions=['push left', 'push right']), with any of {allowed}")
        return cls(**spec)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (and so saved by SB3) as its :attr:`spec`, never the model: unpickling reloads it by name."""
        return (type(self).from_spec, (self.spec,))

    def shared_prefix(self) -> tuple[int, Any] | None:
        """``(n, KV cache)`` of the prompt tokens that precede every observation; computed on first use.

        The prefix is found by rendering the prompt around a marker; ``scores`` uses it only when an
        observation's prompt tokens really start with it (a tokenizer may merge across the boundary).
        """
        if self.prefix_ids is None:
            marker = "<<OBSERVATION>>"
            head = self.prompt_text(marker).split(marker)[0]
            tokens = self.lm.tokenizer(head, add_special_tokens=not self.chat)["input_ids"]
            ids = self.prompt_ids("Goal: anything.")
            n = 0  # the longest run of tokens that a real prompt starts with
            while n < len(tokens) and n < len(ids) and tokens[n] == ids[n]:
                n += 1
            self.prefix_ids = list(ids[: max(0, n - 1)])  # drop the last: it may merge with what follows
            if self.prefix_ids:
                prompt = torch.tensor([self.prefix_ids], device=self.lm.model.device)
                with torch.no_grad():
                    self.prefix_cache = output_cache(self.lm.model(input_ids=prompt, use_cache=True))
        if not self.prefix_ids:
            return None
        return len(self.prefix_ids), self.prefix_cache

    def prompt_text(self, observation: str) -> str:
        """The prompt for one observation, chat-rendered when ``chat``."""
        text = self.template.format(observation=observation, actions=", ".join(self.actions))
        if not self.chat:
            return text
        return cast(str, self.lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                               add_generation_prompt=True))  # str: tokenize=False

    def prompt_ids(self, observation: str) -> list[int]:
        """The token ids of the prompt for one observation."""
        return self.lm.tokenizer(self.prompt_text(observation), add_special_tokens=not self.chat)["input_ids"]

    def scores(self, observation: str) -> np.ndarray:
        """Summed log-probabilities (A,) of the action strings; cached by observation text."""
        hit = self.cache.get(observation)
        if hit is None:
            pad = self.lm.tokenizer.pad_token_id or 0
            ids = self.prompt_ids(observation)
            prefix = self.shared_prefix()
            if prefix is not None and ids[: prefix[0]] != self.prefix_ids:
                prefix = None
            hit = action_logprobs(self.lm.model, ids, self.action_ids, pad, prefix).cpu().numpy()
            self.cache.put(observation, hit)
        return hit

    def logprobs(self, observations: Sequence[str]) -> np.ndarray:
        """(B, A) log-probabilities, each row normalised over the actions: ``log_softmax(scores / T)``."""
        scores = np.stack([self.scores(o) for o in observations])
        if self.calibrate:
            scores = scores - self.scores(self.null_observation)
        return log_softmax(scores / self.temperature)

    def probs(self, observations: Sequence[str]) -> np.ndarray:
        """(B, A) probabilities; each row sums to 1."""
        return np.exp(self.logprobs(observations))
