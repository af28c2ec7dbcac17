"""The dataset of an offline run: (prompt, completion, reward) rows, read from JSONL or sampled once from
the base model, tokenised once, served in seeded minibatches.

A row is ``{"prompt": str, "completion": str, "reward": number}`` (extra fields are ignored), exactly what
a langrl LM run writes to ``samples.jsonl``; an optional boolean ``eos`` says whether the text ended
there (generated datasets record it: a completion cut at ``max_new_tokens`` did not end). The prompt is
the text before any chat template; ``prompts.chat`` wraps it as the LM run did. The reward belongs to the
completion's last token.

Generate a dataset from the base model into a file, to share it between runs (the same rows for ILQL and
its baselines)::

    python -m langrl.lm.offline_data configs/ilql_sentiment.yaml data/sentiment.jsonl [--set key=value ...]
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.config import PromptsConfig, load_any_config
from langrl.config.offline import OfflineConfig, OfflinePromptsConfig
from langrl.envs.prompts import encode, left_pad, read_items, render
from langrl.errors import ConfigError
from langrl.rewards import RewardFn, build_reward, score
from langrl.rollout import SamplingConfig, sample
from langrl.run import seeds
from langrl.run.io import atomic_write_jsonl, read_dataset_rows, read_jsonl

FIELDS = {"prompt": str, "completion": str}
ROW_HELP = 'each line must be a JSON object {"prompt": str, "completion": str, "reward": number}'


@dataclass
class OfflineData:
    """Tokenised rows. ``prompt_of[i]`` indexes ``prompt_texts``/``prompt_ids``; ``completion_ids[i]`` ends
    with EOS when the row's text ended (see the module doc); ``rewards`` (N,) float32."""

    prompt_texts: list[str]
    prompt_ids: list[list[int]]
    prompt_of: list[int]
    completions: list[str]
    completion_ids: list[list[int]]
    rewards: torch.Tensor

    def __len__(self) -> int:
        return len(self.completions)


@dataclass
class Minibatch:
    """Rows of the dataset side by side: left-padded prompts, right-padded completions (B rows, Tc columns).

    input_ids, attention_mask: (B, Tp + Tc); completion_ids, completion_mask: (B, Tc); rewards: (B,)
    sequence rewards; weights: (B,) per-row loss weights (1 but for reward-weighted regression).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    rewards: torch.Tensor
    weights: torch.Tensor

    def select(self, rows: torch.Tensor) -> Minibatch:
        return Minibatch(*(t[rows] for t in (self.input_ids, self.attention_mask, self.completion_ids,
                                              self.completion_mask, self.rewards, self.weights)))

    def token_rewards(self) -> torch.Tensor:
        """(B, Tc): each row's reward on its last completion token, 0 elsewhere."""
        out = torch.zeros(self.completion_mask.shape, dtype=torch.float32, device=self.rewards.device)
        last = (self.completion_mask.sum(-1) - 1).clamp(min=0)
        return out.scatter(1, last[:, None], self.rewards.float()[:, None])


def read_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a dataset file, checked: a one-line `ConfigError` names the file, the line and the field."""
    rows = read_dataset_rows(path, "dataset.path", "a JSONL file of scored texts (e.g. the samples.jsonl of a "
                             "langrl run) or use dataset.generate", ROW_HELP)
    for i, row in enumerate(rows):
        check_row(row, f"dataset.path = {path!r}: row {i + 1}")
    return rows


def check_row(row: dict[str, Any], where: str) -> None:
    for name, kind in FIELDS.items():
        if name not in row:
            raise ConfigError(f"{where} has no {name!r} field; {ROW_HELP}")
        if not isinstance(row[name], kind):
            raise ConfigError(f"{where}: {name} = {str(row[name])[:60]!r} is not a string; {ROW_HELP}")
    if "reward" not in row:
        raise ConfigError(f"{where} has no 'reward' field; {ROW_HELP}")
    reward = row["reward"]
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise ConfigError(f"{where}: reward = {reward!r} is not a finite number; drop the row or give its score")
    if "eos" in row and not isinstance(row["eos"], bool):
        raise ConfigError(f"{where}: eos = {row['eos']!r} is not true or false (whether the text ended there)")


def encode_prompts(texts: list[str], tokenizer: PreTrainedTokenizerBase, chat: bool,
                   rendered: bool = False) -> list[list[int]]:
    """Token ids of prompts: chat-wrapped when ``chat`` (`langrl.envs.prompts.encode`), or, ``rendered``, the
    texts as they are (already rendered model input; no special tokens added)."""
    if rendered:
        return [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return encode(texts, tokenizer, chat)


def tokenize_rows(rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, chat: bool,
                  append_eos: bool, rendered: bool = False) -> OfflineData:
    """Tokenise every row once: each distinct prompt (chat-wrapped when ``chat``; as it is when ``rendered``),
    each completion (plus EOS where the text ended). Rows whose completion has no token at all are dropped:
    they hold no action."""
    texts: dict[str, int] = {}
    eos = tokenizer.eos_token_id
    prompt_of, completions, completion_ids, rewards = [], [], [], []
    for row in rows:
        ids = list(tokenizer(row["completion"], add_special_tokens=False)["input_ids"])
        if eos is not None and row.get("eos", append_eos):
            ids.append(int(eos))
        if not ids:
            continue
        prompt_of.append(texts.setdefault(row["prompt"], len(texts)))
        completions.append(row["completion"])
        completion_ids.append(ids)
        rewards.append(float(row["reward"]))
    if not completions:
        raise ConfigError("dataset: every completion is empty (no token to learn from)")
    prompt_texts = list(texts)
    return OfflineData(prompt_texts=prompt_texts, prompt_ids=encode_prompts(prompt_texts, tokenizer, chat, rendered),
                       prompt_of=prompt_of, completions=completions, completion_ids=completion_ids,
                       rewards=torch.tensor(rewards, dtype=torch.float32))


def collate(data: OfflineData, rows: list[int], weights: torch.Tensor, pad_id: int,
            device: torch.device) -> Minibatch:
    """The rows ``rows`` as a `Minibatch`, ordered by prompt so that rows sharing one are packed together."""
    rows = sorted(rows, key=lambda i: (data.prompt_of[i], i))
    prompt_ids, prompt_mask = left_pad([data.prompt_ids[data.prompt_of[i]] for i in rows], pad_id, device)
    width = max(len(data.completion_ids[i]) for i in rows)
    comp = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, i in enumerate(rows):
        ids = data.completion_ids[i]
        comp[j, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[j, :len(ids)] = 1
    comp, mask = comp.to(device), mask.to(device)
    index = torch.tensor(rows, dtype=torch.long)
    return Minibatch(input_ids=torch.cat([prompt_ids, comp], 1), attention_mask=torch.cat([prompt_mask, mask], 1),
                     completion_ids=comp, completion_mask=mask, rewards=data.rewards[index].to(device),
                     weights=weights[index].to(device))


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, size: int, epoch: int) -> list[int]:
    """The seeded permutation of ``size`` rows in ``epoch``: a pure function, so resumed runs see the same."""
    return torch.randperm(size, generator=seeds.generator(seed, "minibatch", epoch)).tolist()


def step_rows(pool: list[int], batch_size: int, seed: int, step: int) -> list[int]:
    """The dataset rows of ``step`` (1-based): consecutive slices of seeded permutations of ``pool``."""
    out = []
    for position in range((step - 1) * batch_size, step * batch_size):
        epoch, offset = divmod(position, len(pool))
        out.append(pool[epoch_order(seed, len(pool), epoch)[offset]])
    return out


def split_prompts(config: OfflinePromptsConfig, seed: int) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts) as rendered texts: the last ``holdout`` of a seeded permutation
    are held out; with ``holdout`` 0 both are all the prompts."""
    items = read_items(PromptsConfig(file=config.file, items=config.items, template=config.template))
    texts = render(items, config.template)
    if config.holdout == 0:
        return texts, texts
    if config.holdout >= len(texts):
        raise ConfigError(f"prompts.holdout = {config.holdout}: there are only {len(texts)} prompts; hold out "
                          f"fewer so that some remain for the dataset")
    order = torch.randperm(len(texts), generator=seeds.generator(seed, "prompt_order", 0)).tolist()
    cut = len(texts) - config.holdout
    return [texts[i] for i in order[:cut]], [texts[i] for i in order[cut:]]


@torch.inference_mode()
def generate_rows(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], chat: bool,
                  config: OfflineConfig, reward: RewardFn, chunk: int = 8) -> list[dict[str, Any]]:
    """Sample ``dataset.generate.per_prompt`` completions of each prompt from ``model`` and score them: the
    rows of a dataset of the base model's behaviour (seeded by ``config.seed``)."""
    gen = config.dataset.generate
    assert gen is not None
    from langrl.lm.collect import decode_completions  # the trainer's decoding of completions, EOS cut

    sampling = SamplingConfig(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_k=gen.top_k,
                              group_size=gen.per_prompt)
    device = next(model.parameters()).device
    generator = seeds.generator(config.seed, "sampling", 0, device=device)
    ids = encode(prompts, tokenizer, chat)
    eos = tokenizer.eos_token_id
    rows: list[dict[str, Any]] = []
    for start in range(0, len(prompts), chunk):
        p_ids, p_mask = left_pad(ids[start:start + chunk], tokenizer.pad_token_id, device)
        rollout = sample(model, p_ids, p_mask, sampling, eos, tokenizer.pad_token_id, generator)
        completions = decode_completions(tokenizer, rollout)
        texts = [p for p in prompts[start:start + chunk] for _ in range(gen.per_prompt)]
        lengths = rollout.completion_mask.sum(-1)
        last = rollout.completion_ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        ended = ((last == eos) & (lengths > 0)).tolist() if eos is not None else [True] * len(texts)
        rewards = score(reward, texts, completions)
        rows += [{"prompt": p, "completion": c, "reward": r, "eos": bool(e)}
                 for p, c, r, e in zip(texts, completions, rewards, ended, strict=True)]
    return rows


def write_dataset(config: OfflineConfig, path: str | Path) -> Path:
    """Sample the dataset that ``dataset.generate`` describes from ``config.model`` (on the training prompts,
    never the held-out ones) and write it to ``path`` as JSONL; return the path."""
    from langrl.models import load_lm

    if config.dataset.generate is None or config.prompts is None or config.reward is None:
        raise ConfigError("writing a dataset needs dataset.generate, a prompts section and a reward")
    lm = load_lm(config.model, dtype=config.dtype, device=config.device, seed=config.seed)
    train_prompts, _ = split_prompts(config.prompts, config.seed)
    rows = generate_rows(lm.model, lm.tokenizer, train_prompts, config.prompts.chat, config,
                         build_reward(config.reward))
    atomic_write_jsonl(Path(path), rows)
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m langrl.lm.offline_data",
                                     description="Sample an offline dataset from a config's base model.")
    parser.add_argument("config", help="a kind: offline YAML with dataset.generate, prompts and reward")
    parser.add_argument("output", help="the JSONL file to write")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    config = load_any_config(args.config, args.overrides)
    if not isinstance(config, OfflineConfig):
        raise SystemExit(f"{args.config}: kind = {config.kind!r}; this command needs kind: offline")
    rows = write_dataset(config, args.output)
    print(f"wrote {len(read_jsonl(rows))} rows to {rows}")


if __name__ == "__main__":
    main()
