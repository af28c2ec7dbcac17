"""The config of a world-model run (``kind: world_model``): an LM learns to predict a text environment's next
observation, reward and end from transitions, by supervised fine-tuning (`langrl.planning.world_model_run`).

The transitions are collected once from seeded episodes (``data``: a random policy, or minigrid's BabyAI bot
with random actions mixed in) or read from a JSONL file; held-out transitions come from other seeds. The
trained run is a world model for the planners of ``kind: plan`` (``world_model.type: lm``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from langrl.config.base import MAX_LR, LogConfig, LoraConfig, OptimConfig, RunConfig, Section, validate

SMALL = "small"  # ``model: small``: `langrl.models.small.small_text_lm`, fitted to the training texts


class SmallModelSection(Section):
    """``model: small``: a random Llama over a word-level tokenizer fitted to the training transitions."""

    hidden_size: int = Field(128, ge=8, le=4096, description="width of the model")
    num_layers: int = Field(4, ge=1, le=64, description="decoder layers")


class WorldModelDataSection(Section):
    """Where the transitions come from: collected from seeded episodes, or read from JSONL files."""

    env_id: str = Field("langrl/BabyAI-GoToLocal-Text-v0", description="a Gymnasium id of a langrl text "
                        "environment (info['actions'] names the actions)")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of gymnasium.make")
    policy: Literal["random", "bot"] = Field("bot", description="random: uniform over the actions; bot: "
                                             "minigrid's BabyAIBot (BabyAI levels) with random actions mixed in")
    epsilon: float = Field(0.3, ge=0, le=1, description="bot: probability of a uniformly random action instead")
    train_episodes: int = Field(500, ge=1, description="training episodes, reset seeds seed_start, seed_start + 1, ...")
    eval_episodes: int = Field(50, ge=1, description="held-out episodes, seeds eval_seed_start, ...")
    seed_start: int = Field(0, ge=0, description="the first training seed")
    eval_seed_start: int = Field(100_000, ge=0, description="the first held-out seed (none may be a training seed)")
    max_steps: int | None = Field(None, ge=1, description="step limit of an episode; null keeps the env's own")
    file: str | None = Field(None, description="JSONL file of training transitions (e.g. another run's "
                             "transitions.jsonl) instead of collecting them; relative to the config file")
    eval_file: str | None = Field(None, description="JSONL file of held-out transitions instead of collecting")
    limit: int | None = Field(None, ge=1, description="train on the first limit transitions only (accuracy "
                              "against data size); null: all")

    @model_validator(mode="after")
    def disjoint_seeds(self) -> WorldModelDataSection:
        train = range(self.seed_start, self.seed_start + self.train_episodes)
        held_out = range(self.eval_seed_start, self.eval_seed_start + self.eval_episodes)
        if self.file is None and self.eval_file is None and max(train.start, held_out.start) < min(train.stop,
                                                                                                  held_out.stop):
            raise ValueError(f"data.eval_seed_start = {self.eval_seed_start}: the held-out seeds {held_out.start}.."
                             f"{held_out.stop - 1} overlap the training seeds {train.start}..{train.stop - 1}; "
                             f"set eval_seed_start to {train.stop} or more")
        return self


class WorldModelTrainSection(Section):
    batch_size: int = Field(16, ge=1, description="transitions per optimizer step")
    micro_batch_size: int = Field(16, ge=1, description="transitions per forward/backward (gradient accumulation)")


class WorldModelOptimSection(OptimConfig):
    """AdamW with defaults for the ``small`` model trained from scratch (a pretrained LM wants ~1e-4)."""

    lr: float = Field(1e-3, gt=0, le=MAX_LR, description=f"AdamW learning rate, at most {MAX_LR}")
    warmup_steps: int = Field(50, ge=0, description="linear learning-rate warm-up")


class WorldModelLogSection(LogConfig):
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints (the last step always)")


class WorldModelEvalSection(Section):
    every: int = Field(250, ge=0, description="steps between held-out evaluations (and one at the last step); "
                                              "0: only at the last step")
    transitions: int = Field(200, ge=1, description="held-out transitions scored (the first of eval data)")
    batch: int = Field(16, ge=1, description="transitions decoded together")
    examples: int = Field(5, ge=0, description="predicted next to true transitions kept for the report")


class WorldModelConfig(RunConfig):
    """An LM world model fitted to transitions of a text environment (``kind: world_model``)."""

    kind: Literal["world_model"] = Field("world_model", description="the kind of run")
    model: str = Field(SMALL, description="'small' (a random Llama fitted to the data's words, see small), or "
                       "an LM to fine-tune: smollm2-135m-instruct, tiny, a local folder or a hub id")
    steps: int = Field(2000, ge=1, description="optimizer steps")
    max_new_tokens: int = Field(256, ge=1, description="cap of one decoded prediction (next observation, "
                                "reward, done) in tokens; planners using the run decode with it too")
    small: SmallModelSection = SmallModelSection()
    lora: LoraConfig | None = Field(None, description="LoRA adapter settings; null trains all weights")
    data: WorldModelDataSection = WorldModelDataSection()
    train: WorldModelTrainSection = WorldModelTrainSection()
    optim: WorldModelOptimSection = WorldModelOptimSection()
    eval: WorldModelEvalSection = WorldModelEvalSection()
    log: WorldModelLogSection = WorldModelLogSection()

    @model_validator(mode="after")
    def consistent(self) -> WorldModelConfig:
        if self.model == SMALL and self.lora is not None:
            raise ValueError("lora: model 'small' is trained from scratch, all weights; set lora: null, or give "
                             "a pretrained model (e.g. smollm2-135m-instruct) to adapt")
        return self


def world_model_config_from_data(data: dict[str, Any], base: Path | None = None) -> WorldModelConfig:
    """Validate the raw mapping of a world-model run; ``base`` (the config file's folder) resolves relative
    ``data.file`` and ``data.eval_file``."""
    config: WorldModelConfig = validate(WorldModelConfig, data)
    if base is not None:
        for name in ("file", "eval_file"):
            value = getattr(config.data, name)
            if value and not Path(value).is_absolute():
                setattr(config.data, name, str((base / value).resolve()))
    return config


__all__ = ["SMALL", "SmallModelSection", "WorldModelConfig", "WorldModelDataSection", "WorldModelEvalSection",
           "WorldModelLogSection", "WorldModelOptimSection", "WorldModelTrainSection", "world_model_config_from_data"]
