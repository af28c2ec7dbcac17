"""The training configuration: one pydantic model, YAML in, clear errors out.

Every error names the field (dotted path), the bad value, and what is allowed. ``--set a.b=value``
overrides reach every key; values are parsed as YAML, so ``--set steps=3`` gives an int.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from langrl.errors import ConfigError
from langrl.rewards import RewardSpec, parse_reward_spec


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptsConfig(Section):
    """Where prompts come from. Each line of ``file`` (or each item of ``items``) fills ``template``."""

    file: str | None = Field(None, description="text file, one item per line; relative to the config "
                                               "file, the working directory, or langrl's data folder")
    items: list[str] | None = Field(None, description="items given inline instead of a file")
    template: str = Field("{item}", description="prompt text; {item} is replaced by each item")
    chat: bool = Field(True, description="wrap each prompt in the tokenizer's chat template when it has one")
    per_step: int = Field(4, ge=1, description="prompts per training step")
    eval_count: int = Field(8, ge=0, description="fixed prompts sampled before and after training")

    @model_validator(mode="after")
    def one_source(self) -> PromptsConfig:
        if (self.file is None) == (self.items is None):
            raise ValueError("give exactly one of prompts.file or prompts.items")
        return self


class SamplingSection(Section):
    max_new_tokens: int = Field(32, ge=1, description="completion length cap, in tokens")
    temperature: float = Field(1.0, gt=0, description="softmax temperature for sampling and the loss")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass; 1 disables")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 disables")
    group_size: int = Field(4, ge=1, description="completions per prompt (G)")


class KLConfig(Section):
    coef: float = Field(0.05, ge=0, description="beta, the weight of KL(pi || pi_ref)")
    estimator: Literal["k1", "k2", "k3", "exact"] = Field("k3", description="per-token KL estimator")
    mode: Literal["reward", "loss"] = Field(
        "reward", description="reward: subtract beta * sequence KL from the reward; loss: add beta * KL "
                              "to the loss (GRPO style)")
    reference: Literal["auto", "copy", "adapter"] = Field(
        "auto", description="copy: a frozen copy of the initial model; adapter: the LoRA network with the "
                            "adapter disabled (needs lora); auto: adapter with LoRA, else copy")
    target: float | None = Field(None, gt=0, description="adaptive controller (Ziegler et al. 2019): steer "
                                                        "coef so that kl/ref approaches this many nats")
    horizon: int = Field(10000, ge=1, description="adaptive controller horizon, in samples")


class LoraConfig(Section):
    r: int = Field(16, ge=1, description="rank")
    alpha: float = Field(32, gt=0, description="scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | str = Field("all-linear", description="modules that get an adapter")


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient norm clip; 0 disables")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "linear", description="learning rate after warm-up: constant, or decayed to 0 at the last step")


class TrainConfig(Section):
    epochs: int = Field(1, ge=1, description="passes over each batch of samples (inner epochs)")
    micro_batch_size: int = Field(16, ge=1, description="rows per forward/backward (gradient accumulation)")
    clip_eps: float = Field(0.2, gt=0, description="ratio clip; only matters when epochs > 1")
    loss_aggregation: Literal["seq_mean", "token_mean", "seq_sum"] = Field(
        "seq_mean", description="how per-token losses are averaged")
    baseline_momentum: float = Field(0.9, ge=0, lt=1, description="REINFORCE moving-average baseline")
    scale_rewards: bool = Field(True, description="GRPO: divide by the group's reward std")
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


class LogConfig(Section):
    sample_every: int = Field(10, ge=1, description="steps between rows of samples.jsonl")
    checkpoint_every: int = Field(25, ge=1, description="steps between checkpoints (the last step always)")
    keep_checkpoints: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    tensorboard: bool = Field(True, description="write TensorBoard event files")
    progress: bool = Field(True, description="show a progress bar")


class Config(Section):
    """One training run. ``model``, ``algorithm`` and ``steps`` are the top-level essentials."""

    model: str = Field("smollm2-135m-instruct", description="embedded short name, hub id, local folder, "
                                                            "or 'tiny' (random test model)")
    algorithm: Literal["reinforce", "rloo", "grpo", "a2c", "ppo", "dpg"] = Field(
        "grpo", description="the RL algorithm")
    steps: int = Field(100, ge=1, description="training steps")
    seed: int = Field(0, description="seeds sampling, prompt order and initialisation")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="model dtype")
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 keeps torch's default")
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
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def consistent(self) -> Config:
        if self.algorithm == "rloo" and self.sampling.group_size < 2:
            raise ValueError("algorithm 'rloo' needs sampling.group_size >= 2 (it leaves one out)")
        if self.algorithm == "grpo" and self.sampling.group_size < 2:
            raise ValueError("algorithm 'grpo' needs sampling.group_size >= 2 (it normalises within groups)")
        if self.algorithm == "dpg" and self.kl.coef <= 0 and not self.dpg.constraint:
            raise ValueError("algorithm 'dpg' targets pi0 exp(r / beta): it needs kl.coef > 0 (beta)")
        if self.bayes.exact and self.kl.coef <= 0:
            raise ValueError("bayes.exact compares with pi* = pi0 exp(r / beta) / Z: it needs kl.coef > 0")
        if self.kl.reference == "adapter" and self.lora is None:
            raise ValueError("kl.reference 'adapter' needs a lora section (the adapter is what is disabled)")
        return self


def set_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` to nested ``data`` in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.sub=value, e.g. --set steps=3")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} holds {child!r}, not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def read_config_data(source: str | Path | dict[str, Any],
                     overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], Path | None]:
    """The raw mapping of a YAML file (or a dict) with ``key=value`` overrides applied, and the file's
    folder (None for a dict)."""
    if isinstance(source, dict):
        data, base = copy.deepcopy(source), None  # overrides must not reach into the caller's dict
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, "
                              f"not {type(data).__name__}")
        base = path.parent
    for assignment in overrides:
        set_override(data, assignment)
    return data, base


def is_agent_config(source: Any) -> bool:
    """A config with a top-level ``env`` section is an LM agent run (``langrl.agents``): a YAML path, a
    dict, or an already built ``AgentConfig``."""
    if not isinstance(source, (str, Path, dict)):
        return hasattr(source, "env")
    data, _ = read_config_data(source)
    return "env" in data


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML (or take a dict), apply ``key=value`` overrides, validate.

    A file's relative ``prompts.file`` is resolved against the file's folder first.
    """
    data, base = read_config_data(source, overrides)
    # The reward union gets its own messages ("unknown reward type 'x'; allowed types: ...").
    reward = data.get("reward")
    if isinstance(reward, list):
        data["reward"] = [parse_reward_spec(item, f"reward[{i}]") for i, item in enumerate(reward)]
    elif reward is not None:
        data["reward"] = parse_reward_spec(reward)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from None
    if base is not None and config.prompts.file and not Path(config.prompts.file).is_absolute():
        candidate = base / config.prompts.file
        if candidate.exists():
            config.prompts.file = str(candidate.resolve())
    return config


def format_errors(error: ValidationError, root: type[BaseModel] = Config) -> str:
    """One line per problem: ``field.path = value: what is wrong (allowed: ...)``; ``root`` is the model
    that was validated."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(unknown_field_message(loc, root))
        elif item["type"] == "missing":
            lines.append(f"{loc}: required field is missing")
        else:
            lines.append(f"{loc} = {item.get('input')!r}: {item['msg']}")
    return "invalid config:\n  " + "\n  ".join(lines)


def unknown_field_message(loc: str, root: type[BaseModel] = Config) -> str:
    """Name the unknown key and suggest the closest allowed one."""
    *parents, name = loc.split(".")
    model: type[BaseModel] = root
    for part in parents:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        sub = next((a for a in getattr(annotation, "__args__", (annotation,))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            return f"{loc}: unknown field"
        model = sub
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{loc}: unknown field{hint} (allowed: {', '.join(allowed)})"


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML (what the run directory keeps)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
