"""Prompts: read once, tokenised once, served in a seeded order."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import cast

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from langrl.config import PromptsConfig
from langrl.errors import ConfigError
from langrl.run import seeds


def read_items(config: PromptsConfig) -> list[str]:
    """The prompt items: inline, or one per non-empty line of ``file``.

    A relative file is looked up in the working directory, then in langrl's bundled data folder.
    """
    if config.items is not None:
        items = [item for item in config.items if item.strip()]
    else:
        assert config.file is not None
        path = Path(config.file).expanduser()
        if not path.exists():
            bundled = resources.files("langrl") / "data" / config.file
            if not bundled.is_file():
                raise ConfigError(f"prompts.file = {config.file!r}: no such file (looked in the config's "
                                  f"folder, the working directory and langrl's data folder)")
            path = Path(str(bundled))
        items = [line.strip() for line in read_text_file(path, config.file).splitlines() if line.strip()]
    if not items:
        raise ConfigError("prompts: no prompt items (the file or list is empty)")
    return items


def read_text_file(path: Path, name: str) -> str:
    """The UTF-8 text of the prompts file ``path`` (``name`` as the config gave it); a `ConfigError`
    naming the file when it is binary, not UTF-8, or cannot be read."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is not prompt text
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompts.file = {name!r}: {str(path)!r} is not UTF-8 text (byte "
                          f"0x{e.object[e.start]:02x} at offset {e.start}); give a UTF-8 text file "
                          f"with one prompt per line") from e
    except OSError as e:
        raise ConfigError(f"prompts.file = {name!r}: cannot read {str(path)!r} ({e.strerror or e}); give a "
                          f"UTF-8 text file with one prompt per line") from e
    if "\x00" in text:
        raise ConfigError(f"prompts.file = {name!r}: {str(path)!r} holds NUL bytes, so it is binary, not text; "
                          f"give a UTF-8 text file with one prompt per line")
    return text


def render(items: list[str], template: str) -> list[str]:
    """Fill ``{item}`` in the template with each item."""
    if "{item}" not in template:
        raise ConfigError(f"prompts.template = {template!r} must contain {{item}}")
    return [template.replace("{item}", item) for item in items]


def encode(texts: list[str], tokenizer: PreTrainedTokenizerBase, chat: bool) -> list[list[int]]:
    """Token ids of each prompt, wrapped in the chat template when asked and available."""
    if chat and tokenizer.chat_template:
        return [
            list(cast(BatchEncoding, tokenizer.apply_chat_template(  # return_dict=True: a BatchEncoding
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True, return_dict=True,
            ))["input_ids"])
            for t in texts
        ]
    return [tokenizer(t)["input_ids"] for t in texts]


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, Tp) ids and mask, left-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


@dataclass
class PromptSet:
    """Prompt texts with their token ids; ``for_step`` is a pure function of (seed, step)."""

    texts: list[str]
    ids: list[list[int]]
    per_step: int
    seed: int

    def for_step(self, step: int) -> list[int]:
        """Indices of the prompts of ``step`` (0-based): consecutive slices of seeded permutations."""
        n = len(self.texts)
        out = []
        for position in range(step * self.per_step, (step + 1) * self.per_step):
            epoch, offset = divmod(position, n)
            generator = seeds.generator(self.seed, "prompt_order", epoch)
            out.append(int(torch.randperm(n, generator=generator)[offset]))
        return out


def build_prompts(config: PromptsConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PromptSet:
    texts = render(read_items(config), config.template)
    return PromptSet(texts=texts, ids=encode(texts, tokenizer, config.chat), per_step=config.per_step,
                     seed=seed)
