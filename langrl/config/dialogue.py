"""The config of multi-turn RL (``kind: dialogue``): an LM talks with a simulated user, episode by episode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from langrl.config.base import LogConfig, LoraConfig, OptimConfig, RunConfig, Section, validate
from langrl.config.lm import KLConfig, SamplingSection, TrainConfig


class DialogueEnvConfig(Section):
    """The simulated user: a Gymnasium text environment with free-text actions (``langrl/...-v0``)."""

    id: str = Field("langrl/TwentyQuestions-v0", description="gymnasium id: langrl/TwentyQuestions-v0, "
                    "langrl/GuessMyCity-v0, langrl/HelpDesk-v0, langrl/LMUser-v0 or any registered text env")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="the environment's own arguments for "
                                   "training (e.g. num_objects, max_turns, split: train)")
    eval_kwargs: dict[str, Any] = Field(default_factory=dict, description="arguments overriding kwargs for "
                                        "evaluation, e.g. {split: test} for held-out user goals")
    system: str | None = Field(None, description="system prompt of the policy")
    chat: bool = Field(True, description="render turns with the tokenizer's chat template when it has one")
    max_context: int = Field(1024, ge=16, description="an episode whose context would exceed this many tokens "
                                                      "is cut (truncated)")


class DialogueEvalConfig(Section):
    episodes: int = Field(32, ge=0, description="held-out episodes played before and after training (eval_kwargs)")
    batch: int = Field(16, ge=1, description="episodes played together in evaluation")


class DialogueConfig(RunConfig):
    """Multi-turn RL (``kind: dialogue``): REINFORCE/RLOO/GRPO over whole episodes with a simulated user; the
    loss and the KL to the reference cover only the policy's own tokens."""

    kind: Literal["dialogue"] = Field("dialogue", description="the kind of run: dialogue (multi-turn RL)")
    algorithm: Literal["reinforce", "rloo", "grpo"] = Field("grpo", description="the RL algorithm")
    steps: int = Field(50, ge=1, description="training steps")
    episodes_per_step: int = Field(4, ge=1, description="start states per step; each is played "
                                                       "sampling.group_size times (the group of its baseline)")
    env: DialogueEnvConfig = DialogueEnvConfig()
    sampling: SamplingSection = SamplingSection(max_new_tokens=24)
    kl: KLConfig = KLConfig(estimator="k1")
    lora: LoraConfig | None = Field(None, description="LoRA adapter settings; null trains all weights")
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: DialogueEvalConfig = DialogueEvalConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def consistent(self) -> DialogueConfig:
        if self.algorithm in ("rloo", "grpo") and self.sampling.group_size < 2:
            raise ValueError(f"algorithm {self.algorithm!r} needs sampling.group_size >= 2 (episodes per start "
                             f"state, compared with each other)")
        if self.train.prefix_baseline:
            raise ValueError("train.prefix_baseline is for single-turn prompts; set it to false for dialogue runs")
        if self.kl.reference == "adapter" and self.lora is None:
            raise ValueError("kl.reference 'adapter' needs a lora section (the adapter is what is disabled)")
        return self


def dialogue_config_from_data(data: dict[str, Any], base: Path | None) -> DialogueConfig:
    """Validate the raw mapping of a dialogue run (``base``, the config's folder, is not needed)."""
    config: DialogueConfig = validate(DialogueConfig, data)
    return config
