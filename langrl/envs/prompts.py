"""Prompts: read once, tokenised once, served in a seeded order.

A prompt source is inline ``items``, a text file (one prompt per line), a table (JSONL, JSON, CSV, TSV,
Parquet), or a Hugging Face `datasets` dataset (a hub name, a folder saved with ``save_to_disk``, or a folder
of data files). A table's prompt column holds text (filled into ``prompts.template``) or a conversation
(``[{"role": ..., "content": ...}, ...]``, used as it is); every column of a row travels with its prompt
(`PromptSet.columns`) so that a reward can check a completion against the row's ``answer``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from langrl.config import PromptsConfig
from langrl.errors import ConfigError
from langrl.run import seeds

Message = dict[str, Any]
Prompt = str | list[Message]  # text, or a conversation
RESERVED_COLUMNS = ("prompts", "completions")  # a reward's positional arguments
DEFAULT_COLUMNS = ("prompt", "messages")
DATA_HINT = "pip install 'langrl[data]'"


@dataclass
class PromptData:
    """Prompts as read, before templates and tokens: ``prompts[i]`` with ``columns[name][i]`` (no columns for
    text sources)."""

    prompts: list[Prompt]
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def select(self, indices: Sequence[int]) -> PromptData:
        return PromptData([self.prompts[i] for i in indices],
                          {name: [values[i] for i in indices] for name, values in self.columns.items()})


# --- finding and reading sources -------------------------------------------------------------------------


def locate(name: str, key: str) -> Path:
    """The path of ``prompts.<key> = name``: as given (absolute, or relative to the working directory; the
    config's folder was tried when the config was read), else in langrl's bundled data folder."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    bundled = resources.files("langrl") / "data" / name
    if bundled.is_file() or bundled.is_dir():
        return Path(str(bundled))
    raise ConfigError(f"prompts.{key} = {name!r}: no such file (looked in the config's folder, the working "
                      f"directory and langrl's data folder)")


def read_text_file(path: Path, name: str, key: str = "file") -> str:
    """The UTF-8 text of the prompts file ``path`` (``name`` as the config gave it); a `ConfigError`
    naming the file when it is binary, not UTF-8, or cannot be read."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is not prompt text
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompts.{key} = {name!r}: {str(path)!r} is not UTF-8 text (byte "
                          f"0x{e.object[e.start]:02x} at offset {e.start}); give a UTF-8 text file "
                          f"with one prompt per line") from e
    except OSError as e:
        raise ConfigError(f"prompts.{key} = {name!r}: cannot read {str(path)!r} ({e.strerror or e}); give a "
                          f"UTF-8 text file with one prompt per line") from e
    if "\x00" in text:
        raise ConfigError(f"prompts.{key} = {name!r}: {str(path)!r} holds NUL bytes, so it is binary, not text; "
                          f"give a UTF-8 text file with one prompt per line")
    return text


def records_to_columns(records: list[Any], where: str, unit: str) -> dict[str, list[Any]]:
    """Column lists from row mappings; a key a row lacks is None there. ``unit`` names a row in messages."""
    names: dict[str, None] = {}
    for i, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: {unit} {i} is a {type(record).__name__}, not an object of columns "
                              f"such as {{\"prompt\": \"...\"}}")
        names.update(dict.fromkeys(record))
    return {name: [record.get(name) for record in records] for name in names}


def read_jsonl(path: Path, where: str, name: str, key: str) -> dict[str, list[Any]]:
    records = []
    for number, line in enumerate(read_text_file(path, name, key).splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: line {number} is not JSON ({e.msg}, column {e.colno})") from None
    return records_to_columns(records, where, "line")


def read_json(path: Path, where: str, name: str, key: str) -> dict[str, list[Any]]:
    """A JSON array of row objects; a ``.json`` file of one object per line (what `datasets` writes) is JSONL."""
    text = read_text_file(path, name, key)
    if not text.lstrip().startswith("["):
        return read_jsonl(path, where, name, key)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not JSON ({e.msg}, line {e.lineno}, column {e.colno})") from None
    return records_to_columns(records, where, "item")


def read_delimited(path: Path, where: str, name: str, key: str, delimiter: str) -> dict[str, list[Any]]:
    """CSV (or TSV) with a header row; every value is text."""
    reader = csv.DictReader(io.StringIO(read_text_file(path, name, key), newline=""), delimiter=delimiter)
    records = []
    for record in reader:
        if None in record:  # DictReader files surplus fields under the key None
            raise ConfigError(f"{where}: line {reader.line_num} has more fields than the header "
                              f"({', '.join(reader.fieldnames or [])})")
        records.append(record)
    if reader.fieldnames is None:
        raise ConfigError(f"{where}: empty file; a header row names the columns, e.g. prompt,answer")
    return {name: [record[name] for record in records] for name in reader.fieldnames}


def read_parquet(path: Path, where: str) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{where}: reading Parquet needs pyarrow ({DATA_HINT})") from None
    try:
        return cast(dict[str, list[Any]], pq.read_table(path).to_pydict())
    except Exception as e:  # pyarrow's ArrowInvalid and OSError for a file that is not Parquet
        raise ConfigError(f"{where}: cannot read it as Parquet ({type(e).__name__}: {one_line(e)})") from None


def one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


TableReader = Callable[[Path, str, str, str], dict[str, list[Any]]]
TABLE_READERS: dict[str, TableReader] = {
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json,
    ".csv": lambda path, where, name, key: read_delimited(path, where, name, key, ","),
    ".tsv": lambda path, where, name, key: read_delimited(path, where, name, key, "\t"),
    ".parquet": lambda path, where, name, key: read_parquet(path, where),
    ".pq": lambda path, where, name, key: read_parquet(path, where),
}


def open_dataset(source: str, subset: str | None, where: str) -> Any:
    """A `datasets` Dataset or DatasetDict: ``load_from_disk`` for a folder saved with ``save_to_disk``,
    else ``load_dataset`` (a folder of data files, or a hub name)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"{where}: reading a Hugging Face dataset needs the datasets package ({DATA_HINT})"
                          ) from None
    path = Path(source).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path) if path.is_dir() else source, subset)
    except Exception as e:  # datasets raises many kinds: FileNotFoundError, DatasetNotFoundError, ConnectionError
        offline = "" if path.is_dir() else " (offline, a hub dataset must be in the cache; or give a local folder)"
        raise ConfigError(f"{where}: cannot load it ({type(e).__name__}: {one_line(e)}){offline}") from None


def dataset_split(data: Any, split: str | None, where: str, key: str) -> dict[str, list[Any]]:
    """The columns of ``split`` of a DatasetDict (or of a Dataset, which is one split)."""
    import datasets  # already imported by open_dataset

    if isinstance(data, datasets.Dataset):
        if split not in (None, "train"):
            raise ConfigError(f"{where}: holds one dataset, not splits, so prompts.{key} = {split!r} cannot "
                              f"be found; hold prompts out with prompts.eval_fraction or prompts.eval_file")
        return cast(dict[str, list[Any]], data.to_dict())
    names = list(data)
    if split is None:
        if "train" not in names and len(names) != 1:
            raise ConfigError(f"{where}: splits {', '.join(names)}; choose one with prompts.{key}")
        split = "train" if "train" in names else names[0]
    if split not in names:
        raise ConfigError(f"{where}: no split {split!r} (splits: {', '.join(names)}); set prompts.{key}")
    return cast(dict[str, list[Any]], data[split].to_dict())


# --- columns to prompts ----------------------------------------------------------------------------------


def conversation(value: list[Any], where: str, row: int) -> list[Message]:
    """A list of ``{"role": str, "content": str}`` messages, checked."""
    if not value:
        raise ConfigError(f"{where}: row {row}: an empty conversation")
    for message in value:
        if not (isinstance(message, Mapping) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise ConfigError(f"{where}: row {row}: a message {str(message)[:80]!r} is not "
                              f"{{\"role\": \"...\", \"content\": \"...\"}} with text content")
    return [dict(message) for message in value]


def prompt_column(columns: Mapping[str, list[Any]], column: str | None, where: str) -> str:
    """The prompt column: the configured one, else ``prompt``, else ``messages``; a one-line error that names
    the columns found when it is missing."""
    for name in RESERVED_COLUMNS:
        if name in columns:
            raise ConfigError(f"{where}: column {name!r} would clash with the reward's argument of that name; "
                              f"rename it")
    candidates = [column] if column is not None else list(DEFAULT_COLUMNS)
    found = [name for name in candidates if name in columns]
    if not found:
        missing = " or ".join(repr(name) for name in candidates)
        raise ConfigError(f"{where}: no column {missing} (columns found: {', '.join(columns) or 'none'}); "
                          f"set prompts.column to the prompt's column")
    return found[0]


def table_prompts(columns: dict[str, list[Any]], column: str | None, where: str) -> PromptData:
    """Prompts from a table: text or conversations, all of one kind."""
    if not any(columns.values()):
        return PromptData([])  # no rows: `read_source` says the source is empty
    name = prompt_column(columns, column, where)
    prompts: list[Prompt] = []
    for row, value in enumerate(columns[name], 1):
        if isinstance(value, str) and value.strip():
            prompts.append(value)
        elif isinstance(value, list):
            prompts.append(conversation(value, where, row))
        else:
            what = "empty text" if isinstance(value, str) else f"{type(value).__name__} {repr(value)[:40]}"
            raise ConfigError(f"{where}: row {row}: column {name!r} holds {what}, not a prompt (text, or a "
                              f"list of {{\"role\", \"content\"}} messages)")
    if len({isinstance(p, str) for p in prompts}) > 1:
        raise ConfigError(f"{where}: column {name!r} mixes text and conversations; give one kind")
    return PromptData(prompts, columns)


def read_source(config: PromptsConfig, key: str, split: str | None, split_key: str) -> PromptData:
    """The prompts of one source: ``prompts.<key>`` (file, eval_file or dataset), ``split`` of it when it has
    splits. A source without prompts is an error."""
    name = cast(str, getattr(config, key))
    where = f"prompts.{key} = {name!r}"
    if key == "dataset":
        data = table_prompts(dataset_split(open_dataset(name, config.subset, where), split, where, split_key),
                             config.column, where)
    else:
        path = locate(name, key)
        reader = TABLE_READERS.get(path.suffix.lower())
        if path.is_dir():
            data = table_prompts(dataset_split(open_dataset(str(path), None, where), split, where, split_key),
                                 config.column, where)
        elif split is not None:
            raise ConfigError(f"prompts.{split_key} = {split!r}: {name!r} is a single file, not a dataset with "
                              f"splits; hold prompts out with prompts.eval_file or prompts.eval_fraction")
        elif reader is not None:
            data = table_prompts(reader(path, where, name, key), config.column, where)
        elif config.column is not None:
            raise ConfigError(f"prompts.column = {config.column!r}: {name!r} is a text file (one prompt per "
                              f"line, no columns); give .jsonl, .json, .csv, .tsv or .parquet")
        else:
            lines = read_text_file(path, name, key).splitlines()
            data = PromptData([line.strip() for line in lines if line.strip()])
    if not data.prompts:
        raise ConfigError(f"{where}: no prompts (the file or split is empty)")
    return data


def held_out_indices(count: int, fraction: float) -> list[int]:
    """The rows held out by ``eval_fraction``: a fixed draw (the same for every run seed), in file order."""
    held = max(1, round(fraction * count))
    if held >= count:
        raise ConfigError(f"prompts.eval_fraction = {fraction:g} of {count} prompts leaves none to train on")
    return sorted(random.Random(count).sample(range(count), held))


def read_prompt_data(config: PromptsConfig) -> tuple[PromptData, PromptData | None]:
    """The training prompts and the held-out ones (None when the config holds none out)."""
    if config.items is not None:
        train = PromptData([item for item in config.items if item.strip()])
        if not train.prompts:
            raise ConfigError("prompts: no prompt items (the file or list is empty)")
    else:
        key = "file" if config.file is not None else "dataset"
        train = read_source(config, key, config.split, "split")
    if config.eval_file is not None:
        return train, read_source(config, "eval_file", None, "eval_split")
    if config.eval_split is not None:
        return train, read_source(config, "file" if config.file is not None else "dataset", config.eval_split,
                                  "eval_split")
    if config.eval_fraction > 0:
        held = held_out_indices(len(train.prompts), config.eval_fraction)
        kept = sorted(set(range(len(train.prompts))) - set(held))
        return train.select(kept), train.select(held)
    return train, None


def read_items(config: PromptsConfig) -> list[str]:
    """The training prompts' items as text (before the template). Conversations have no item text."""
    prompts = read_prompt_data(config)[0].prompts
    if not all(isinstance(p, str) for p in prompts):
        raise ConfigError("prompts: the prompts are conversations, not text items")
    return cast(list[str], prompts)


def render(items: list[str], template: str) -> list[str]:
    """Fill ``{item}`` in the template with each item."""
    if "{item}" not in template:
        raise ConfigError(f"prompts.template = {template!r} must contain {{item}}")
    return [template.replace("{item}", item) for item in items]


# --- tokens ----------------------------------------------------------------------------------------------


def with_system(messages: list[Message], system: str | None) -> list[Message]:
    """``messages`` behind a system message, unless there is no system prompt or they have their own."""
    if system is None or messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system}, *messages]


def plain_text(messages: list[Message]) -> str:
    """A conversation as text for a model without a chat template: a system prompt and one user message are
    joined by a blank line (so a lone user message is its own text); longer talks get ``role: `` prefixes."""
    if [m["role"] for m in messages if m["role"] != "system"] == ["user"]:
        return "\n\n".join(m["content"] for m in messages)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def encode_messages(conversations: list[list[Message]], tokenizer: PreTrainedTokenizerBase,
                    chat: bool) -> list[list[int]]:
    """Token ids of each conversation, through the chat template when asked and available, else of its
    `plain_text`."""
    if chat and tokenizer.chat_template:
        return [
            list(cast(BatchEncoding, tokenizer.apply_chat_template(  # return_dict=True: a BatchEncoding
                messages, add_generation_prompt=True, tokenize=True, return_dict=True,
            ))["input_ids"])
            for messages in conversations
        ]
    return [tokenizer(plain_text(messages))["input_ids"] for messages in conversations]


def encode(texts: list[str], tokenizer: PreTrainedTokenizerBase, chat: bool) -> list[list[int]]:
    """Token ids of each prompt, wrapped in the chat template when asked and available."""
    return encode_messages([[{"role": "user", "content": t}] for t in texts], tokenizer, chat)


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
    """Prompt texts with their token ids and their rows' columns; ``for_step`` is a pure function of
    (seed, step).

    ``texts[i]`` is what rewards and logs see as the prompt: the filled template, or a conversation's last
    message. ``columns[name][i]`` is column ``name`` of prompt i's row (no columns for text sources).
    """

    texts: list[str]
    ids: list[list[int]]
    per_step: int
    seed: int
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def for_step(self, step: int) -> list[int]:
        """Indices of the prompts of ``step`` (0-based): consecutive slices of seeded permutations."""
        n = len(self.texts)
        out = []
        for position in range(step * self.per_step, (step + 1) * self.per_step):
            epoch, offset = divmod(position, n)
            generator = seeds.generator(self.seed, "prompt_order", epoch)
            out.append(int(torch.randperm(n, generator=generator)[offset]))
        return out

    def columns_for(self, indices: Sequence[int], group_size: int) -> dict[str, list[Any]]:
        """The columns of the completions of prompts ``indices``, ``group_size`` each: aligned with the texts
        and completions of a rollout (rows b*G .. b*G+G-1 share prompt ``indices[b]``)."""
        return {name: [values[i] for i in indices for _ in range(group_size)]
                for name, values in self.columns.items()}


def prompt_set(data: PromptData, config: PromptsConfig, tokenizer: PreTrainedTokenizerBase,
               seed: int) -> PromptSet:
    """Templates filled (text prompts), system prompt added, tokens encoded."""
    if all(isinstance(p, str) for p in data.prompts):
        texts = render(cast(list[str], data.prompts), config.template)
        conversations = [[{"role": "user", "content": t}] for t in texts]
    else:
        if config.template != "{item}":
            raise ConfigError(f"prompts.template = {config.template!r}: the prompts are conversations, used as "
                              f"they are; drop the template")
        conversations = cast(list[list[Message]], data.prompts)
        texts = [messages[-1]["content"] for messages in conversations]
    ids = encode_messages([with_system(messages, config.system) for messages in conversations], tokenizer,
                          config.chat)
    return PromptSet(texts=texts, ids=ids, per_step=config.per_step, seed=seed, columns=data.columns)


def build_prompt_sets(config: PromptsConfig, tokenizer: PreTrainedTokenizerBase,
                      seed: int) -> tuple[PromptSet, PromptSet]:
    """The training prompts and the evaluation prompts: the held-out ones, or the training ones when the
    config holds none out."""
    train, held_out = read_prompt_data(config)
    train_set = prompt_set(train, config, tokenizer, seed)
    return train_set, train_set if held_out is None else prompt_set(held_out, config, tokenizer, seed)


def build_prompts(config: PromptsConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PromptSet:
    """The training prompts (`build_prompt_sets` gives the evaluation prompts too)."""
    return build_prompt_sets(config, tokenizer, seed)[0]
