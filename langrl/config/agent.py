"""The config of an LM agent run (``kind: agent``): an action-scoring LM policy in a Gymnasium text
environment, behaviour cloning, then PPO over environment steps. ``lora``, ``optim``, ``log`` and the KL
reference are the shared sections of `langrl.config.base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from langrl.config.base import (
    MAX_LR,
    KLBase,
    LogConfig,
    LoraConfig,
    OptimConfig,
    RunConfig,
    Section,
    read_config_data,
    validate,
)
from langrl.config.distributed import DistributedConfig, env_shards_problem

# The prompt of an action-scoring LM: {actions} lists the admissible action strings.
PRIOR_TEMPLATE = (
    "You are an agent in a text game. Possible actions: {actions}.\n{observation}\nYour next action:"
)


class EnvSection(Section):
    id: str = Field("langrl/BabyAI-GoToLocal-Text-v0", description="a Gymnasium id of a langrl text "
                    "environment (its reset info lists the action strings in info['actions'])")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of gymnasium.make")
    num_envs: int = Field(4, ge=1, description="parallel environments (one batched LM pass per step)")
    max_episode_steps: int | None = Field(None, ge=1, description="step limit; null keeps the env's own")


class PolicySection(Section):
    window: int = Field(2, ge=0, description="earlier (observation, action) pairs shown in the prompt")
    template: str = Field(PRIOR_TEMPLATE, description="prompt text with {actions} and {observation}")
    chat: bool | None = Field(None, description="wrap the prompt in the chat template; null: when the "
                                                "tokenizer has one")
    sep: str = Field(" ", description="text between the prompt and an action string (without chat)")
    freeze: list[str] = Field(default_factory=list, description="freeze parameters whose name contains any "
                              "of these, e.g. [embed_tokens] (as train.freeze of LM runs)")

    @model_validator(mode="after")
    def placeholders(self) -> PolicySection:
        missing = [p for p in ("{observation}", "{actions}") if p not in self.template]
        if missing:
            raise ValueError(f"policy.template must contain {' and '.join(missing)}")
        return self


class ImitationSection(Section):
    """Behaviour cloning before PPO."""

    source: Literal["none", "bot", "lm"] = Field(
        "none", description="none: start PPO from the pretrained LM (the zero-shot prior); bot: clone "
        "minigrid's BabyAIBot; lm: clone the successful episodes of an LM proposer")
    episodes: int = Field(100, ge=1, description="demonstration episodes to collect (lm: attempts)")
    seed_start: int = Field(100_000, ge=0, description="demonstration seeds are seed_start, seed_start + 1, "
                            "...")
    epochs: int = Field(2, ge=1, description="passes over the demonstrations")
    batch_size: int = Field(16, ge=1, description="demonstration steps per optimizer step")
    lr: float = Field(1e-4, gt=0, le=MAX_LR, description=f"AdamW learning rate of cloning, at most {MAX_LR}")
    proposer: str | None = Field(None, description="lm: the model proposing actions (default: model)")
    proposer_template: str | None = Field(None, description="lm: the proposer's prompt (default: "
                                                            "policy.template)")
    proposer_greedy: bool = Field(True, description="lm: the proposer's most likely action, else sampled")


class PPOSection(Section):
    """PPO over environment steps (Schulman et al. 2017), GAE over each environment's steps."""

    env_steps: int = Field(100_000, ge=1, description="total environment steps (all environments)")
    n_steps: int = Field(32, ge=1, description="steps per environment per rollout")
    epochs: int = Field(4, ge=1, description="passes over each rollout")
    minibatch_size: int = Field(32, ge=1, description="states per optimizer step")
    gamma: float = Field(0.99, ge=0, le=1, description="discount per environment step")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    clip_eps: float = Field(0.2, gt=0, description="ratio clip")
    value_coef: float = Field(0.5, ge=0, description="weight of the value loss")
    value_clip: float | None = Field(None, gt=0, description="value clipping; null disables")
    entropy_coef: float = Field(0.01, ge=0, description="weight of the entropy bonus (over the actions)")
    whiten_advantages: bool = Field(True, description="whiten advantages over each rollout")


class AgentKLSection(KLBase):
    """KL(pi || pi_ref) over the admissible actions, computed exactly (A terms), to the initial LM."""

    coef: float = Field(0.0, ge=0, description="beta; 0 switches the reference off")
    mode: Literal["reward", "loss"] = Field("loss", description="loss: add beta * KL to the loss; reward: "
                                                                "subtract beta * KL from each step's reward")

class EvalSection(Section):
    episodes: int = Field(100, ge=0, description="evaluation episodes, one per held-out seed")
    seed_start: int = Field(1_000_000, ge=0, description="held-out seeds are seed_start, seed_start + 1, ...")
    every: int = Field(0, ge=0, description="PPO updates between evaluations; 0: only at the phase ends")
    prior: bool = Field(True, description="also evaluate the pretrained LM (the zero-shot prior) first")
    greedy: bool = Field(True, description="take the most likely action, else sample")
    parallel: int = Field(8, ge=1, description="episodes run side by side (one batched pass per step)")


class AgentConfig(RunConfig):
    """An LM agent run (``kind: agent``): behaviour cloning (optional), then PPO in the environment."""

    kind: Literal["agent"] = Field("agent", description="the kind of run: lm (RL on prompts) or agent (an LM "
                                                        "acting in a Gymnasium text environment)")
    env: EnvSection = EnvSection()
    policy: PolicySection = PolicySection()
    imitation: ImitationSection = ImitationSection()
    ppo: PPOSection = PPOSection()
    kl: AgentKLSection = AgentKLSection()
    lora: LoraConfig | None = Field(None, description="LoRA adapter settings; null trains all weights")
    optim: OptimConfig = Field(OptimConfig(lr=1e-5, schedule="constant"), description="PPO's optimizer")
    eval: EvalSection = EvalSection()
    log: LogConfig = Field(LogConfig(checkpoint_every=10), description="checkpoint_every counts PPO updates")
    distributed: DistributedConfig = Field(DistributedConfig(), description="rollout workers on Ray: shards "
                                           "are slices of the env.num_envs environments")

    @model_validator(mode="after")
    def consistent(self) -> AgentConfig:
        problem = env_shards_problem(self.distributed, self.env.num_envs, "an agent run")
        if problem is not None:
            raise ValueError(problem)
        if self.kl.reference == "adapter" and self.lora is None:
            raise ValueError("kl.reference 'adapter' needs a lora section (the adapter is what is disabled)")
        if self.ppo.env_steps < self.ppo.n_steps * self.env.num_envs:
            raise ValueError(f"ppo.env_steps = {self.ppo.env_steps} is less than one rollout "
                             f"(ppo.n_steps * env.num_envs = {self.ppo.n_steps * self.env.num_envs})")
        return self

    @property
    def updates(self) -> int:
        """PPO updates: whole rollouts of n_steps x num_envs environment steps within ppo.env_steps."""
        return self.ppo.env_steps // (self.ppo.n_steps * self.env.num_envs)


def load_agent_config(source: str | Path | dict[str, Any] | AgentConfig,
                      overrides: list[str] | tuple[str, ...] = ()) -> AgentConfig:
    """Read YAML (or take a dict), apply ``key=value`` overrides, validate."""
    if isinstance(source, AgentConfig):
        return source
    data, base = read_config_data(source, overrides)
    return agent_config_from_data(data, base)


def agent_config_from_data(data: dict[str, Any], base: Path | None = None) -> AgentConfig:
    """Validate the raw mapping of an agent run."""
    config: AgentConfig = validate(AgentConfig, data)
    return config
