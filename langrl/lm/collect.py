"""Collecting a training step's samples: sampling, rewards and prefix rewards, shard by shard.

`collect_shard` is a pure function of the run's sampling weights, the step and the shard, so the learner
(`LocalCollector`) and a Ray actor (`langrl.distributed.ray_rollouts`) return the same thing for it.
What a worker needs of the learner's weights is `sampling_state`: the policy's trainable parameters
(the LoRA adapter alone with LoRA) and the state of the modules the algorithm samples with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.distributed.shards import join_prefix_rewards, join_rollouts, shard_generator, shard_indices
from langrl.distributed.weights import load_arrays, state_arrays, trainable_arrays
from langrl.envs.prompts import PromptSet, left_pad
from langrl.lm.prefix import prefix_rewards
from langrl.models import merged_lora
from langrl.rewards import score
from langrl.rollout import SamplingConfig, TokenRollout, sample
from langrl.run import parallel

if TYPE_CHECKING:
    from langrl.lm.trainer import Run


@dataclass
class ShardResult:
    """What one shard of a step produced, and with which weights (``version``: updates applied)."""

    shard: int
    version: int
    rollout: TokenRollout
    prompts: list[str]
    completions: list[str]
    rewards: list[float]
    prefix: torch.Tensor | None
    sample_s: float
    reward_s: float


@dataclass
class StepSamples:
    """A whole step's samples, the shards joined in order."""

    rollout: TokenRollout
    prompts: list[str]
    completions: list[str]
    rewards: list[float]
    prefix: torch.Tensor | None
    version: int
    sample_s: float
    reward_s: float
    sync_s: float = 0.0  # publishing the weights to rollout workers


def collect_shard(run: Run, step: int, shard: int, shards: int, indices: Sequence[int],
                  version: int) -> ShardResult:
    """Sample, score (and score the prefixes of) the completions of prompts ``indices``, shard ``shard``."""
    t0 = time.perf_counter()
    generator = shard_generator(run.config.seed, step, shard, shards, run.device)
    rollout, prompts, completions = rollout_prompts(run.algorithm.behaviour(run.policy), run.tokenizer,
                                                    run.task.prompts, list(indices), run.sampling, generator,
                                                    run.algorithm.value_head)
    t1 = time.perf_counter()
    # Each completion's row columns (its prompt's answer...) reach a reward that declares them.
    columns = run.task.prompts.columns_for(list(indices), run.sampling.group_size)
    rewards = score(run.task.reward, prompts, completions, columns)
    prefix = None
    if run.config.train.prefix_baseline:
        prefix = prefix_rewards(run.task.reward, run.tokenizer, prompts, rollout, columns)
    return ShardResult(shard, version, rollout, prompts, completions, rewards, prefix,
                       sample_s=t1 - t0, reward_s=time.perf_counter() - t1)


def join_shards(results: Sequence[ShardResult], pad_token_id: int) -> StepSamples:
    """The shards' results (any order) as one step, in shard order; ``version``: the oldest weights used."""
    ordered = sorted(results, key=lambda r: r.shard)
    return StepSamples(
        rollout=join_rollouts([r.rollout for r in ordered], pad_token_id),
        prompts=[p for r in ordered for p in r.prompts],
        completions=[c for r in ordered for c in r.completions],
        rewards=[x for r in ordered for x in r.rewards],
        prefix=join_prefix_rewards([r.prefix for r in ordered]),
        version=min(r.version for r in ordered),
        sample_s=sum(r.sample_s for r in ordered),
        reward_s=sum(r.reward_s for r in ordered),
    )


def step_shards(indices: Sequence[int], shards: int) -> list[tuple[int, list[int]]]:
    """(shard, its prompt indices) for the shards that have prompts."""
    return [(k, part) for k, part in enumerate(shard_indices(indices, shards)) if part]


def rollout_prompts(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: PromptSet,
                    indices: list[int], sampling: SamplingConfig, generator: torch.Generator,
                    value_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    ) -> tuple[TokenRollout, list[str], list[str]]:
    """Sample completions for the prompts ``indices``; return the rollout, prompt texts and completions.

    With LoRA the adapter is folded into the weights while sampling (decoding through it is ~2x slower).
    """
    device = next(policy.parameters()).device
    ids, mask = left_pad([prompts.ids[i] for i in indices], tokenizer.pad_token_id, device)
    with merged_lora(policy) as snapshot:
        rollout = sample(snapshot, ids, mask, sampling, tokenizer.eos_token_id, tokenizer.pad_token_id,
                         generator, value_head)
    completions = decode_completions(tokenizer, rollout)
    texts = [prompts.texts[i] for i in indices for _ in range(sampling.group_size)]
    return rollout, texts, completions


def decode_completions(tokenizer: PreTrainedTokenizerBase, rollout: TokenRollout) -> list[str]:
    """The text of each completion: its sampled tokens up to, not including, the EOS that ended it.

    Padding is cut by the mask rather than by ``skip_special_tokens``, which would also delete tokens
    that the model really wrote (e.g. the toy model's letter ``a``, which doubles as its pad token).
    """
    eos = tokenizer.eos_token_id
    texts = []
    for ids, length in zip(rollout.completion_ids.tolist(), rollout.completion_mask.sum(-1).tolist(),
                           strict=True):
        ids = ids[:int(length)]
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        texts.append(cast(str, tokenizer.decode(ids)))
    return texts


class Collector(Protocol):
    """Where a run's samples come from. ``submit`` starts collecting a step's prompts with the weights of
    ``version`` (updates applied); ``result`` waits for that step's samples."""

    def submit(self, step: int, indices: Sequence[int], version: int) -> None: ...

    def result(self, step: int) -> StepSamples: ...

    def close(self) -> None: ...


class LocalCollector:
    """The shards of a step sampled one after another in the learner, with its live weights. Among
    data-parallel learners (`langrl.run.parallel`) each samples every W-th shard and all get every shard."""

    def __init__(self, run: Run, shards: int):
        self.run, self.shards = run, shards
        self.pending: dict[int, tuple[list[int], int]] = {}

    def submit(self, step: int, indices: Sequence[int], version: int) -> None:
        self.pending[step] = (list(indices), version)

    def result(self, step: int) -> StepSamples:
        indices, version = self.pending.pop(step)
        own = [collect_shard(self.run, step, k, self.shards, part, version)
               for k, part in parallel.mine(step_shards(indices, self.shards))]
        everyone = [r for part in parallel.gather(own) for r in part]
        return join_shards(everyone, self.run.tokenizer.pad_token_id)

    def close(self) -> None:
        self.pending.clear()


def sampling_state(run: Run) -> dict[str, np.ndarray]:
    """The weights a rollout worker needs (`langrl.distributed.weights`): the policy's trainable parameters
    as ``policy.<name>``, and the state of each module the algorithm samples with as ``<module>.<name>``."""
    state = trainable_arrays(run.policy, "policy")
    for name, module in run.algorithm.sampling_modules().items():
        state |= state_arrays(module, name)
    return state


def load_sampling_state(run: Run, state: dict[str, np.ndarray]) -> None:
    """Copy :func:`sampling_state` arrays into ``run``'s policy and sampling modules, in place."""
    load_arrays({"policy": run.policy, **run.algorithm.sampling_modules()}, state)
