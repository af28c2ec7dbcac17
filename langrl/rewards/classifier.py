"""Reward from any Hugging Face sequence classifier: the probability (or log-odds) of one label.

This is the reward of the sentiment-steering experiments in Ziegler et al. 2019, "Fine-Tuning
Language Models from Human Preferences" (arXiv:1909.08593), and of most RLHF tutorials
(e.g. a DistilBERT IMDB classifier's "POSITIVE" label).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from langrl.errors import ConfigError

ScoredText = Literal["completion", "prompt+completion"]


def label_names(config: Any) -> dict[int, str]:
    """``{index: name}`` of a model config, from ``id2label`` (keys may be str in JSON-loaded configs)."""
    id2label: Mapping[Any, str] = getattr(config, "id2label", None) or {}
    num_labels = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    names = {int(k): str(v) for k, v in id2label.items()}
    return {i: names.get(i, f"LABEL_{i}") for i in range(num_labels)}


def resolve_label(config: Any, label: str | int) -> int:
    """Index of ``label`` in a classifier's outputs; ``label`` is a name (``id2label``/``label2id``) or index.

    Names match exactly first, then case-insensitively if that is unambiguous ("positive" finds
    "POSITIVE"). Raises `ConfigError` listing the available labels when nothing matches.
    """
    names = label_names(config)
    available = ", ".join(f"{i}={n!r}" for i, n in names.items())
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise ConfigError(f"classifier reward: label must be a label name or an integer index, got {label!r}")
    if isinstance(label, int):
        if label not in names:
            raise ConfigError(
                f"classifier reward: label index {label} out of range for {len(names)} labels ({available})"
            )
        return label
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    label2id.update({n: i for i, n in names.items()})
    if label in label2id:
        return label2id[label]
    folded = [i for n, i in label2id.items() if n.lower() == label.lower()]
    if len(set(folded)) == 1:
        return folded[0]
    raise ConfigError(f"classifier reward: unknown label {label!r}; available labels: {available}")


class ClassifierReward:
    """Reward = P(label | text) from a sequence classifier, or its log-odds with ``logit=True``.

    - ``model``: a hub name or a local folder holding a model saved with ``save_pretrained``
      and its tokenizer.
    - ``label``: a name from ``model.config.id2label`` (e.g. ``"POSITIVE"``) or an index.
    - Probabilities use a softmax over labels, or a per-label sigmoid for models configured
      with ``problem_type="multi_label_classification"`` (or a single output).
    - ``logit=True`` gives the log-odds ``log(p / (1 - p))``, unbounded and not saturating
      near 0 or 1, which keeps a useful gradient signal once the policy is already good.
      For a softmax it equals ``z_label - logsumexp(z_other)``: the raw logit minus the others,
      so it does not depend on the arbitrary shift of the logits.
    - ``text``: score the ``"completion"`` alone, or ``"prompt+completion"`` (concatenated as
      is, since a completion continues its prompt).
    - Inputs are truncated to ``max_length`` tokens (capped by the model's own limit) and
      scored ``batch_size`` at a time under `torch.inference_mode`, on ``device`` (default:
      CUDA if available, else CPU).
    """

    def __init__(
        self,
        model: str | Path,
        label: str | int,
        *,
        logit: bool = False,
        batch_size: int = 32,
        device: str | None = None,
        max_length: int = 512,
        text: ScoredText = "completion",
        name: str = "classifier",
    ) -> None:
        # Imported here: transformers takes seconds to import and most rewards do not need it.
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size <= 0 or max_length <= 0:
            raise ConfigError(
                f"classifier reward: batch_size and max_length must be > 0, got {batch_size}, {max_length}"
            )
        if text not in ("completion", "prompt+completion"):
            raise ConfigError(
                f"classifier reward: text must be 'completion' or 'prompt+completion', got {text!r}"
            )
        local = Path(model).expanduser()
        if not local.exists() and (local.is_absolute() or str(model).startswith((".", "~"))):
            raise ConfigError(f"classifier reward: model folder {str(local)!r} not found")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(model))
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"classifier reward: cannot load a sequence classifier and tokenizer from {str(model)!r} "
                f"(a hub name or a folder written by save_pretrained): {e}"
            ) from e
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            # GPT-2-style tokenizers have no pad token; padding is masked out, so any token works.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            # Decoder classifiers pool the last non-pad token and need to know which id is padding.
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

        self.label_index = resolve_label(self.model.config, label)
        self.label_name = label_names(self.model.config)[self.label_index]
        self.multi_label = (
            getattr(self.model.config, "problem_type", None) == "multi_label_classification"
            or self.model.config.num_labels == 1
        )
        self.logit = logit
        self.batch_size = batch_size
        self.max_length = token_limit(max_length, self.tokenizer, self.model.config)
        self.text: ScoredText = text
        self.name = name

    @torch.inference_mode()
    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        texts = (
            completions
            if self.text == "completion"
            else [p + c for p, c in zip(prompts, completions, strict=True)]
        )
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            inputs = fill_empty_rows(dict(batch), self.tokenizer.pad_token_id or 0)
            logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits.float()  # (B, L)
            out.extend(label_score(logits, self.label_index, self.multi_label, self.logit).tolist())
        return out


def token_limit(requested: int, tokenizer: Any, config: Any) -> int:
    """The truncation length: ``requested``, capped by what the tokenizer and the model accept.

    Tokenizers built without a ``model_max_length`` report a huge sentinel (1e30), so the
    model's ``max_position_embeddings`` is checked too; without the cap a long completion
    crashes the position embedding instead of being truncated.
    """
    limits = [
        requested,
        getattr(tokenizer, "model_max_length", None),
        getattr(config, "max_position_embeddings", None),
    ]
    return min(int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1e9)


def fill_empty_rows(inputs: dict[str, torch.Tensor], fill_id: int) -> dict[str, torch.Tensor]:
    """Give rows that tokenized to nothing one attended padding token; tensors ``(B, T)``.

    An empty completion is a normal policy output, but with a tokenizer that adds no special
    tokens (GPT-2 style) it becomes a zero-length row, which crashes or yields NaN (attention
    over nothing). Scoring it as a lone padding token gives every text a defined reward.
    """
    mask = inputs.get("attention_mask")
    ids = inputs["input_ids"]
    if mask is None or (ids.shape[1] > 0 and bool(mask.sum(dim=1).all())):
        return inputs
    if ids.shape[1] == 0:
        inputs = {k: v.new_zeros((v.shape[0], 1)) for k, v in inputs.items()}
        inputs["input_ids"].fill_(fill_id)
        mask = inputs["attention_mask"]
        ids = inputs["input_ids"]
    empty = mask.sum(dim=1) == 0
    ids[empty, 0] = fill_id
    mask[empty, 0] = 1
    return inputs


def label_score(logits: torch.Tensor, index: int, multi_label: bool, logit: bool) -> torch.Tensor:
    """Probability or log-odds of label ``index`` from classifier logits ``(B, L)``; returns ``(B,)``.

    Softmax: ``p = softmax(z)[index]``, log-odds ``= z[index] - logsumexp(z[others])``.
    Sigmoid (multi-label): ``p = sigmoid(z[index])``, log-odds ``= z[index]``.
    Computed in log space, so ``logit=True`` stays finite where ``p`` rounds to 0 or 1.
    """
    if multi_label:
        chosen = logits[:, index]
        return chosen if logit else torch.sigmoid(chosen)
    if not logit:
        return torch.softmax(logits, dim=-1)[:, index]
    others = torch.cat([logits[:, :index], logits[:, index + 1 :]], dim=-1)
    return logits[:, index] - torch.logsumexp(others, dim=-1)
