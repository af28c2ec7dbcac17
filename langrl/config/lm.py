"""The config of an LM fine-tuning run (``kind: lm``): prompts, sampling, reward, KL, algorithm sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from langrl.config.base import (
    KLBase,
    LogConfig,
    LoraConfig,
    OptimConfig,
    RunConfig,
    Section,
    read_config_data,
    validate,
)
from langrl.config.distributed import DistributedConfig
from langrl.rewards import RewardSpec, parse_reward_spec


class PromptsConfig(Section):
    """Where prompts come from: one source (``file``, ``dataset`` or ``items``), how a row becomes a prompt
    (``column``, ``template``, ``system``, ``chat``), and which prompts are held out for evaluation
    (at most one of ``eval_file``, ``eval_split``, ``eval_fraction``).

    A file's format follows its extension: ``.jsonl``/``.json``, ``.csv``/``.tsv``, ``.parquet``, a folder
    (a `datasets` folder saved with ``save_to_disk``, or a folder of data files); any other file is text,
    one prompt per line. Every column of a row reaches a reward that declares it as a keyword argument.
    """

    file: str | None = Field(None, description="text (one item per line), .jsonl, .json, .csv, .tsv, .parquet, "
                                               "or a datasets folder; relative to the config file, the working "
                                               "directory, or langrl's data folder")
    dataset: str | None = Field(None, description="a Hugging Face datasets name (or local path), loaded with "
                                                  "datasets.load_dataset; needs the network unless cached")
    subset: str | None = Field(None, description="the dataset's configuration name (load_dataset's name)")
    items: list[str] | None = Field(None, description="items given inline instead of a file")
    split: str | None = Field(None, description="the split to train on, for a dataset or a folder with splits "
                                                "(default: train)")
    column: str | None = Field(None, description="the prompt column of tabular data (default: prompt, else "
                                                 "messages); text, or a conversation [{role, content}, ...]")
    template: str = Field("{item}", description="prompt text; {item} is replaced by each item (text prompts)")
    system: str | None = Field(None, description="system prompt put before each prompt (a conversation that "
                                                 "has its own system message keeps it)")
    chat: bool = Field(True, description="wrap each prompt in the tokenizer's chat template when it has one")
    per_step: int = Field(4, ge=1, description="prompts per training step")
    eval_count: int = Field(8, ge=0, description="fixed prompts sampled before and after training: the first "
                                                 "held-out prompts when there are some, else the first prompts")
    eval_samples: int = Field(1, ge=1, description="completions per evaluation prompt before and after training; "
                                                   "with 2 or more the report also draws best-of-n from them")
    eval_file: str | None = Field(None, description="held-out prompts for evaluation, a file read like file")
    eval_split: str | None = Field(None, description="held-out split of the dataset or folder, e.g. test")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="hold out this fraction of the rows for "
                                                              "evaluation (a fixed draw, the same for every seed)")

    @field_validator("template", "system", mode="before")
    @classmethod
    def text_not_mapping(cls, value: Any) -> Any:
        """YAML reads an unquoted ``{item}`` as the mapping ``{item: null}``; such a mapping can only have
        meant its own text. Any other mapping or list is refused with the quoting that fixes it."""
        if isinstance(value, dict) and value and all(isinstance(k, str) and v is None for k, v in value.items()):
            return "{" + ", ".join(value) + "}"
        if isinstance(value, (dict, list)):
            raise ValueError("YAML read this as a mapping or list, not text: quote it, e.g. "
                             "--set 'prompts.template=\"Q: {item}\"' or template: \"Q: {item}\"")
        return value

    @model_validator(mode="after")
    def one_source(self) -> PromptsConfig:
        if sum(source is not None for source in (self.file, self.dataset, self.items)) != 1:
            raise ValueError("give exactly one of prompts.file or prompts.items or prompts.dataset")
        held_out = [name for name, on in (("eval_file", self.eval_file is not None),
                                          ("eval_split", self.eval_split is not None),
                                          ("eval_fraction", self.eval_fraction > 0)) if on]
        if len(held_out) > 1:
            raise ValueError(f"give at most one of prompts.{' or prompts.'.join(held_out)} (the held-out prompts)")
        if self.subset is not None and self.dataset is None:
            raise ValueError("prompts.subset names a configuration of prompts.dataset; give prompts.dataset")
        if self.items is not None and (self.split is not None or self.eval_split is not None):
            raise ValueError("prompts.split and prompts.eval_split pick splits of a dataset or folder, "
                             "not of prompts.items")
        return self

    @property
    def holds_out(self) -> bool:
        """Whether evaluation prompts are held out from training."""
        return self.eval_file is not None or self.eval_split is not None or self.eval_fraction > 0


class SamplingSection(Section):
    max_new_tokens: int = Field(32, ge=1, description="completion length cap, in tokens")
    temperature: float = Field(1.0, gt=0, description="softmax temperature for sampling and the loss")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass; 1 disables. With top_p < 1 or "
                         "top_k > 0 the loss and kl/ref still use the untruncated distribution (as TRL and OpenRLHF "
                         "do): the samples are slightly off-policy and kl/ref is not the KL of what was sampled")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 disables (see top_p)")
    group_size: int = Field(4, ge=1, description="completions per prompt (G)")


class KLConfig(KLBase):
    estimator: Literal["k1", "k2", "k3", "exact"] = Field("k3", description="per-token KL estimator")
    target: float | None = Field(None, gt=0, description="adaptive controller (Ziegler et al. 2019): steer "
                                                        "coef so that kl/ref approaches this many nats")
    horizon: int = Field(10000, ge=1, description="adaptive controller horizon, in samples")

class TrainConfig(Section):
    epochs: int = Field(1, ge=1, description="passes over each batch of samples (inner epochs)")
    micro_batch_size: int = Field(16, ge=1, description="rows per forward/backward (gradient accumulation)")
    clip_eps: float = Field(0.2, gt=0, description="ratio clip; only matters when epochs > 1")
    loss_aggregation: Literal["seq_mean", "token_mean", "seq_sum"] = Field(
        "seq_mean", description="how per-token losses are averaged")
    baseline_momentum: float = Field(0.9, ge=0, lt=1, description="REINFORCE moving-average baseline")
    scale_rewards: bool = Field(True, description="GRPO: divide by the group's reward std")
    prefix_baseline: bool = Field(
        False, description="REINFORCE/RLOO/GRPO: each token's advantage counts only the reward earned from that "
        "token on (the reward minus the reward of the completion's text before it, and in kl.mode reward the KL "
        "penalty from that token on; unbiased, lower variance when reward accrues along the text, as sentiment "
        "does); one extra reward call per token")
    freeze: list[str] = Field(
        default_factory=list, description="freeze parameters whose name contains any of these, e.g. "
        "[embed_tokens]: the (tied) embeddings get a gradient on every vocabulary row through the "
        "softmax, and Adam turns that noise into lr-sized steps on tokens never sampled")


class ActorCriticConfig(Section):
    """A2C and PPO: token-level GAE with a value head (Schulman et al. 2016, 2017; Ziegler et al. 2019)."""

    gamma: float = Field(1.0, ge=0, le=1, description="discount over completion tokens")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    value_coef: float = Field(0.5, ge=0, description="weight of the value loss")
    value_clip: float | None = Field(0.2, gt=0, description="PPO value clipping; null disables")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus")
    whiten_rewards: bool = Field(False, description="whiten sequence scores across the batch")
    whiten_advantages: bool = Field(True, description="whiten advantages across the batch's tokens")
    critic: Literal["shared", "separate"] = Field(
        "shared", description="shared: value head on the policy's trunk; separate: a copy of the model")


class DPGConfig(Section):
    """Distributional policy gradient toward pi* = pi0 exp(r / beta) / Z, beta = kl.coef."""

    constraint: bool = Field(False, description="target pi0(y) a(y) / Z instead, a(y) = reward in {0, 1}")
    swap_proposal: bool = Field(True, description="replace the proposal q by pi when pi is closer to pi*")


class BayesConfig(Section):
    exact: bool = Field(False, description="enumerate all completions of the single prompt and log the "
                                           "exact bayes/kl_to_optimum every step (toy spaces only)")
    estimates: bool = Field(False, description="log importance-sampling estimates of log Z, KL(pi || pi*) "
                                               "and the ESS from each batch")


class LMEvalConfig(Section):
    every: int = Field(0, ge=0, description="steps between evaluations on the evaluation prompts during "
                       "training (prompts.eval_count x prompts.eval_samples, drawn as the before/after samples "
                       "are): eval/reward and eval/kl in metrics.jsonl and the report; 0: before and after only")


class Config(RunConfig):
    """Fine-tuning an LM on prompts (``kind: lm``): ``model``, ``algorithm`` and ``steps`` are the essentials."""

    kind: Literal["lm"] = Field("lm", description="the kind of run: lm (RL on prompts) or agent (an LM "
                                                  "acting in a Gymnasium text environment)")
    algorithm: Literal["reinforce", "rloo", "grpo", "a2c", "ppo", "dpg"] = Field(
        "grpo", description="the RL algorithm")
    steps: int = Field(100, ge=1, description="training steps")
    prompts: PromptsConfig
    sampling: SamplingSection = SamplingSection()
    reward: RewardSpec | list[RewardSpec]
    kl: KLConfig = KLConfig()
    lora: LoraConfig | None = Field(None, description="LoRA adapter settings; null trains all weights")
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    actor_critic: ActorCriticConfig = ActorCriticConfig()
    dpg: DPGConfig = DPGConfig()
    bayes: BayesConfig = BayesConfig()
    eval: LMEvalConfig = LMEvalConfig()
    log: LogConfig = LogConfig()
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def consistent(self) -> Config:
        if self.algorithm == "rloo" and self.sampling.group_size < 2:
            raise ValueError("algorithm 'rloo' needs sampling.group_size >= 2 (it leaves one out)")
        if self.algorithm == "grpo" and self.sampling.group_size < 2:
            raise ValueError("algorithm 'grpo' needs sampling.group_size >= 2 (it normalises within groups)")
        if self.train.prefix_baseline and self.algorithm not in ("reinforce", "rloo", "grpo"):
            raise ValueError(f"train.prefix_baseline applies to reinforce, rloo and grpo, not algorithm "
                             f"{self.algorithm!r}; set it to false (actor-critic methods have a value function)")
        if self.algorithm == "dpg" and self.kl.coef <= 0 and not self.dpg.constraint:
            raise ValueError("algorithm 'dpg' targets pi0 exp(r / beta): it needs kl.coef > 0 (beta)")
        if self.bayes.exact and self.kl.coef <= 0:
            raise ValueError("bayes.exact compares with pi* = pi0 exp(r / beta) / Z: it needs kl.coef > 0")
        if self.eval.every and self.prompts.eval_count == 0:
            raise ValueError(f"eval.every={self.eval.every} evaluates prompts.eval_count prompts, which is 0; "
                             "set prompts.eval_count >= 1 or eval.every=0")
        if self.distributed.learners > 1 and self.algorithm == "ppo" and self.train.loss_aggregation != "seq_mean":
            raise ValueError(f"train.loss_aggregation = {self.train.loss_aggregation!r}: ppo with distributed.learners "
                             f"> 1 splits each minibatch's rows among the learners, exact only for seq_mean; set "
                             f"train.loss_aggregation=seq_mean or distributed.learners=1")
        if self.kl.reference == "adapter" and self.lora is None:
            raise ValueError("kl.reference 'adapter' needs a lora section (the adapter is what is disabled)")
        return self


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML (or take a dict), apply ``key=value`` overrides, validate.

    A file's relative ``prompts.file`` (``eval_file``, a local ``dataset``) is resolved against the file's
    folder first.
    """
    data, base = read_config_data(source, overrides)
    return lm_config_from_data(data, base)


def lm_config_from_data(data: dict[str, Any], base: Path | None) -> Config:
    """Validate the raw mapping of an LM run; ``base`` is the config file's folder."""
    # The reward union gets its own messages ("unknown reward type 'x'; allowed types: ...").
    reward = data.get("reward")
    if isinstance(reward, list):
        data["reward"] = [parse_reward_spec(item, f"reward[{i}]") for i, item in enumerate(reward)]
    elif reward is not None:
        data["reward"] = parse_reward_spec(reward)
    config: Config = validate(Config, data)
    if base is not None:
        for field in ("file", "eval_file", "dataset"):
            name = getattr(config.prompts, field)
            if name and not Path(name).is_absolute() and (base / name).exists():
                setattr(config.prompts, field, str((base / name).resolve()))
    return config
