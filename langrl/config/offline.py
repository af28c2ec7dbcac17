"""The config of an offline run (``kind: offline``): learning an LM from a fixed dataset of scored texts.

``algorithm`` picks the learner: ``ilql`` (token-level Q-learning, `langrl.rl.ilql`), ``filtered_bc``
(behaviour cloning of the best rows) or ``rwr`` (reward-weighted regression). The dataset is a JSONL
file of (prompt, completion, reward) rows, such as the ``samples.jsonl`` of any langrl LM run, or is
sampled once from the base model before training (``dataset.generate``); training never samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from langrl.config.base import LogConfig, OptimConfig, RunConfig, Section, validate
from langrl.rewards import RewardSpec, parse_reward_spec


class GenerateConfig(Section):
    """Sample the dataset from the base model (``model``) once, before the first step."""

    per_prompt: int = Field(8, ge=1, description="completions sampled for each training prompt")
    max_new_tokens: int = Field(32, ge=1, description="completion length cap, in tokens")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (1: the base model itself)")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 disables")


class DatasetConfig(Section):
    """Where the scored texts come from: exactly one of ``path`` or ``generate``."""

    path: str | None = Field(None, description="JSONL file of {prompt, completion, reward} rows (e.g. a run's "
                                               "samples.jsonl); relative to the config file's folder")
    generate: GenerateConfig | None = Field(None, description="sample the rows from the base model before "
                                                              "training; they are kept in <run>/dataset.jsonl")
    append_eos: bool = Field(True, description="end each completion with the tokenizer's EOS (the text ended "
                                               "there); a row's own boolean 'eos' field takes precedence")
    rendered: bool = Field(False, description="the rows' prompts are already rendered model input (e.g. a "
                                              "dialogue's chat-template context, as langrl.agents.reply_feedback "
                                              "logs it): tokenised as they are, no template applied")

    @model_validator(mode="after")
    def one_source(self) -> DatasetConfig:
        if (self.path is None) == (self.generate is None):
            raise ValueError("give exactly one of dataset.path (a JSONL file) or dataset.generate (sample "
                             "the dataset from the base model)")
        return self


class OfflinePromptsConfig(Section):
    """Prompts for generating the dataset and for evaluation: each item fills ``template``."""

    file: str | None = Field(None, description="text file, one item per line; relative to the config file, "
                                               "the working directory, or langrl's data folder")
    items: list[str] | None = Field(None, description="items given inline instead of a file")
    template: str = Field("{item}", description="prompt text; {item} is replaced by each item")
    chat: bool = Field(True, description="wrap each prompt (dataset rows' too) in the tokenizer's chat template")
    holdout: int = Field(0, ge=0, description="prompts held out of dataset.generate for evaluation (the last "
                                              "of a seeded permutation); 0 evaluates on the training prompts")

    @model_validator(mode="after")
    def one_source(self) -> OfflinePromptsConfig:
        if (self.file is None) == (self.items is None):
            raise ValueError("give exactly one of prompts.file or prompts.items")
        return self


class DecodeConfig(Section):
    """How the trained policy writes (evaluation, before/after samples)."""

    beta: float = Field(1.0, ge=0, description="ILQL: logits = log pi_beta + beta (Q - V); 0 decodes pi_beta")
    greedy: bool = Field(False, description="take the most likely token instead of sampling")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 disables")
    temperature: float = Field(1.0, gt=0, description="divides the (shaped) logits")
    max_new_tokens: int = Field(32, ge=1, description="completion length cap, in tokens")
    samples: int = Field(4, ge=1, description="completions per prompt in evaluation")
    batch_prompts: int = Field(8, ge=1, description="prompts decoded together")
    eval_prompts: int = Field(8, ge=0, description="evaluation prompts decoded before and after training "
                                                   "(reward/mean, kl/ref and the report's samples); 0 skips")


class ILQLConfig(Section):
    """ILQL (Snell et al. 2022): twin Q heads, Polyak targets, an expectile V head, CQL, AWAC extraction."""

    tau: float = Field(0.7, ge=0.5, le=1, description="expectile of V over the data's actions (1: the max)")
    gamma: float = Field(1.0, ge=0, le=1, description="discount over completion tokens")
    cql_coef: float = Field(0.1, ge=0, description="alpha, the weight of the CQL cross-entropy of Q")
    polyak: float = Field(0.01, gt=0, le=1, description="target heads <- (1 - rate) target + rate online, "
                                                        "after every step")
    heads: int = Field(2, ge=1, le=4, description="twin Q heads whose minimum is the target")
    trunk: Literal["shared", "separate"] = Field(
        "shared", description="shared: heads on the trained LM's trunk, pi_beta its LM head; separate: "
                              "pi_beta is the frozen base model and the heads sit on a trained copy of it")
    policy: Literal["awac", "nll"] = Field(
        "awac", description="shared trunk: the LM head's loss, advantage-weighted (awac) or plain NLL")
    policy_coef: float = Field(1.0, ge=0, description="weight of the LM head's loss (shared trunk)")
    awac_temperature: float = Field(1.0, gt=0, description="lambda of w = exp(A / lambda)")
    awac_max_weight: float = Field(20.0, gt=0, description="AWAC weights are clipped at this")


class FilteredBCConfig(Section):
    fraction: float = Field(0.1, gt=0, le=1, description="behaviour-clone the top fraction of rows by reward")
    min_reward: float | None = Field(None, description="and only rows whose reward exceeds this (e.g. 0: the "
                                                       "replies a user rewarded); null: no threshold")


class RWRConfig(Section):
    temperature: float = Field(0.1, gt=0, description="weights N softmax(R / temperature): mean 1")


class OfflineTrainConfig(Section):
    batch_size: int = Field(32, ge=1, description="dataset rows per step")
    micro_batch_size: int = Field(32, ge=1, description="rows per forward/backward (gradient accumulation)")
    freeze: list[str] = Field(default_factory=list, description="freeze parameters whose name contains any "
                                                                "of these, e.g. [embed_tokens]")


class OfflineConfig(RunConfig):
    """Learning an LM from scored texts (``kind: offline``)."""

    kind: Literal["offline"] = Field("offline", description="the kind of run")
    algorithm: Literal["ilql", "filtered_bc", "rwr"] = Field("ilql", description="the offline learner")
    steps: int = Field(100, ge=1, description="training steps (each takes train.batch_size rows)")
    dataset: DatasetConfig
    prompts: OfflinePromptsConfig | None = Field(None, description="prompts for dataset.generate and evaluation")
    reward: RewardSpec | list[RewardSpec] | None = Field(None, description="scores generated rows and "
                                                                           "evaluation (training uses the rows')")
    decode: DecodeConfig = DecodeConfig()
    ilql: ILQLConfig = ILQLConfig()
    filtered_bc: FilteredBCConfig = FilteredBCConfig()
    rwr: RWRConfig = RWRConfig()
    train: OfflineTrainConfig = OfflineTrainConfig()
    optim: OptimConfig = OptimConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def consistent(self) -> OfflineConfig:
        if self.dataset.generate is not None and (self.prompts is None or self.reward is None):
            raise ValueError("dataset.generate samples prompts and scores the completions: it needs a prompts "
                             "section and a reward")
        if self.dataset.rendered and (self.dataset.generate is not None or self.prompts is not None):
            raise ValueError("dataset.rendered reads prompts already rendered from dataset.path: drop "
                             "dataset.generate and the prompts section, or set dataset.rendered: false")
        return self


def offline_config_from_data(data: dict[str, Any], base: Path | None) -> OfflineConfig:
    """Validate the raw mapping of an offline run; ``base`` is the config file's folder, against which
    relative ``dataset.path`` and ``prompts.file`` are resolved (when the file is there)."""
    reward = data.get("reward")
    if isinstance(reward, list):
        data["reward"] = [parse_reward_spec(item, f"reward[{i}]") for i, item in enumerate(reward)]
    elif reward is not None:
        data["reward"] = parse_reward_spec(reward)
    config: OfflineConfig = validate(OfflineConfig, data)
    if base is not None:
        if config.dataset.path and not Path(config.dataset.path).is_absolute():
            config.dataset.path = str((base / config.dataset.path).resolve())
        if config.prompts is not None and config.prompts.file and not Path(config.prompts.file).is_absolute():
            candidate = base / config.prompts.file
            if candidate.exists():
                config.prompts.file = str(candidate.resolve())
    return config
