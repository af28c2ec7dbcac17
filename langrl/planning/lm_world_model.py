"""An LM as the world model of a text environment: it reads an observation and an action and writes the
next observation, the reward and whether the episode ended (the text format of
`langrl.planning.transitions`).

- :class:`LMWorldModel` predicts by greedy decoding, so it is deterministic and a planner may cache it; it
  satisfies `langrl.protocols.WorldModel`, and ``TextWorldModel(LMWorldModel(...), actions)`` plugs it into
  MCTS, beam search and BFS. :meth:`LMWorldModel.load` reads a ``kind: world_model`` run.
- :func:`sft_loss`: the cross-entropy of the target text (and EOS) given the prompt, prompt tokens masked out.
- :func:`one_step_accuracy`: how often one predicted step is right on held-out transitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.envs.prompts import left_pad
from langrl.errors import ConfigError
from langrl.models.forward import completion_logits, token_logprobs
from langrl.models.reference import merged_lora
from langrl.planning.transitions import Transition, parse_target, prompt_text, target_text
from langrl.protocols import WorldModel
from langrl.rollout.tokens import SamplingConfig, sample
from langrl.run.checkpoint import list_checkpoints

Step = tuple[str, float, bool]
DEFAULT_MAX_NEW_TOKENS = 256
REWARD_TOLERANCE = 0.05  # a predicted reward within this of the true one is right (targets have 2 decimals)


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``text``'s token ids, no special tokens: prompts and targets are encoded apart, alike in training
    and decoding, so a tokenizer's merges across the boundary never differ between the two."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Encoded:
    """A transition's prompt ids and target ids (the latter ending with EOS)."""

    prompt: list[int]
    target: list[int]


def encode_transitions(tokenizer: PreTrainedTokenizerBase, transitions: Sequence[Transition]) -> list[Encoded]:
    """The prompt and target ids of each transition; EOS ends each target (the generation stops there)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError(f"model: the tokenizer of {tokenizer.name_or_path!r} has no EOS token; a world model "
                          f"must learn where a predicted step ends")
    return [Encoded(token_ids(tokenizer, prompt_text(t.observation, t.action)),
                    token_ids(tokenizer, target_text(t.next_observation, t.reward, t.done)) + [int(eos)])
            for t in transitions]


def encoded_loss(model: PreTrainedModel, rows: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, int]:
    """(mean cross-entropy over every target token of ``rows``, the number of those tokens).

    Prompts are left-padded and targets right-padded side by side, so `completion_logits` scores exactly the
    target positions: the prompt tokens are context, never trained on."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = left_pad([r.prompt for r in rows], pad_id, device)
    width = max(len(r.target) for r in rows)
    target = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        target[i, :len(r.target)] = torch.tensor(r.target, dtype=torch.long)
        mask[i, :len(r.target)] = 1
    target, mask = target.to(device), mask.to(device)
    logits = completion_logits(model, torch.cat([prompt_ids, target], 1), torch.cat([prompt_mask, mask], 1), width)
    logp = token_logprobs(logits, target)
    count = int(mask.sum())
    return -(logp * mask).sum() / count, count


def sft_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
             transitions: Sequence[Transition]) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of each transition's target text and EOS given its prompt."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return encoded_loss(model, encode_transitions(tokenizer, transitions), pad)[0]


class LMWorldModel:
    """``step(state, action) -> (next_state, reward, done)`` by greedy decoding of a causal LM.

    ``max_new_tokens`` caps a generation (a next observation, reward and done); one cut there parses as
    the whole text with reward 0 and not done (`langrl.planning.transitions.parse_target`). ``calls`` counts
    the predicted steps. Decoding takes the most likely token at each position (ties are broken by a draw
    from a generator seeded the same at every call), so the same question gets the same answer.
    """

    deterministic = True

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"the tokenizer of {tokenizer.name_or_path!r} has no EOS token: a world model's "
                              f"generation would only end at max_new_tokens")
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, top_k=1)
        self.calls = 0

    def step(self, state: str, action: str) -> Step:
        return self.step_many([state], [action])[0]

    def step_many(self, states: Sequence[str], actions: Sequence[str]) -> list[Step]:
        """:meth:`step` of each (state, action) pair, decoded as one left-padded batch."""
        return [parse_target(text) for text in self.generate(states, actions)]

    def generate(self, states: Sequence[str], actions: Sequence[str]) -> list[str]:
        """The generated target texts (before parsing) of each (state, action) pair."""
        if len(states) != len(actions):
            raise ValueError(f"{len(states)} states for {len(actions)} actions")
        if not states:
            return []
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        pad = tok.pad_token_id if tok.pad_token_id is not None else int(tok.eos_token_id)
        ids, mask = left_pad([token_ids(tok, prompt_text(s, a)) for s, a in zip(states, actions, strict=True)],
                             pad, device)
        training = self.model.training
        self.model.eval()  # no dropout while predicting
        try:
            with merged_lora(self.model) as model:
                out = sample(model, ids, mask, self.sampling, tok.eos_token_id, pad,
                             torch.Generator(device=device).manual_seed(0))
        finally:
            self.model.train(training)
        self.calls += len(states)
        lengths = out.completion_mask.sum(-1).tolist()
        return [str(tok.decode(row[:n].tolist(), skip_special_tokens=True))
                for row, n in zip(out.completion_ids, lengths, strict=True)]

    @classmethod
    def load(cls, path: str | Path, max_new_tokens: int | None = None, device: str = "auto", dtype: str = "auto",
             field: str = "model") -> LMWorldModel:
        """The world model of a ``kind: world_model`` run folder (its newest checkpoint), one of its
        checkpoints, or any LM folder or name `langrl.models.load_lm` takes. ``max_new_tokens`` None: the
        run's own (its ``config.yaml``), else :data:`DEFAULT_MAX_NEW_TOKENS`. Errors name ``field``."""
        from langrl.models import load_lm

        folder = Path(path)
        found = list_checkpoints(folder) if folder.is_dir() else []
        checkpoint = found[-1] if found else folder
        if folder.is_dir() and not found and not (folder / "config.json").is_file():
            raise ConfigError(f"{field} = {str(path)!r}: neither a world_model run folder with a checkpoint nor "
                              f"a model folder; train one with `langrl train configs/world_model_babyai.yaml`")
        lm = load_lm(str(checkpoint), dtype=dtype, device=device)
        return cls(lm.model.eval(), lm.tokenizer, max_new_tokens or run_max_new_tokens(checkpoint))


def run_max_new_tokens(checkpoint: Path, default: int = DEFAULT_MAX_NEW_TOKENS) -> int:
    """``max_new_tokens`` of the run a checkpoint belongs to (its ``config.yaml``), else ``default``."""
    saved = checkpoint.parent.parent / "config.yaml"
    inside_run = checkpoint.parent.name == "checkpoints" and saved.is_file()
    data = yaml.safe_load(saved.read_text(encoding="utf-8")) if inside_run else None
    value = data.get("max_new_tokens") if isinstance(data, dict) else None
    return value if isinstance(value, int) and value > 0 else default


# ---------------------------------------------------------------------------------------------- accuracy

def predict(world_model: WorldModel, transitions: Sequence[Transition], batch_size: int = 16) -> list[Step]:
    """The world model's step for each transition's (observation, action), ``batch_size`` at a time when it
    has ``step_many``."""
    many = getattr(world_model, "step_many", None)
    if many is None:
        return [world_model.step(t.observation, t.action) for t in transitions]
    out: list[Step] = []
    for i in range(0, len(transitions), batch_size):
        chunk = transitions[i:i + batch_size]
        out += many([t.observation for t in chunk], [t.action for t in chunk])
    return out


def line_f1(predicted: str, true: str) -> float:
    """F1 of the sets of lines of two observations (1 when both are empty)."""
    p, t = set(predicted.splitlines()), set(true.splitlines())
    return 1.0 if not p and not t else 2 * len(p & t) / (len(p) + len(t))


def accuracy(transitions: Sequence[Transition], predictions: Sequence[Step]) -> dict[str, float]:
    """The one-step accuracy of ``predictions`` against ``transitions`` (see :func:`one_step_accuracy`)."""
    n = len(transitions)
    if n == 0:
        raise ValueError("no transitions to score")
    pairs = list(zip(transitions, predictions, strict=True))
    return {
        "obs_exact": sum(obs == t.next_observation for t, (obs, _, _) in pairs) / n,
        "obs_line_f1": sum(line_f1(obs, t.next_observation) for t, (obs, _, _) in pairs) / n,
        "reward_accuracy": sum(abs(r - t.reward) <= REWARD_TOLERANCE for t, (_, r, _) in pairs) / n,
        "success_accuracy": sum((r > 0) == (t.reward > 0) for t, (_, r, _) in pairs) / n,
        "done_accuracy": sum(d == t.done for t, (_, _, d) in pairs) / n,
        "transitions": float(n),
    }


def one_step_accuracy(world_model: WorldModel, transitions: Sequence[Transition],
                      batch_size: int = 16) -> dict[str, float]:
    """How often one predicted step is right, over ``transitions``:

    - ``obs_exact``: the next observation exactly; ``obs_line_f1``: the mean F1 of its set of lines;
    - ``reward_accuracy``: the reward within 0.05; ``success_accuracy``: whether the reward is positive;
    - ``done_accuracy``: whether the episode ended; ``transitions``: how many were scored.
    """
    return accuracy(transitions, predict(world_model, transitions, batch_size))


def prediction_rows(transitions: Sequence[Transition], predictions: Sequence[Step]) -> list[dict[str, Any]]:
    """Predicted next to true steps, as JSON-able rows (the report's examples)."""
    return [{**t.to_dict(), "predicted_observation": obs, "predicted_reward": r, "predicted_done": d}
            for t, (obs, r, d) in zip(transitions, predictions, strict=True)]


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "Encoded", "LMWorldModel", "accuracy", "encode_transitions", "encoded_loss",
           "line_f1", "one_step_accuracy", "predict", "prediction_rows", "run_max_new_tokens", "sft_loss",
           "token_ids"]
