"""The config of a DQN run (``kind: dqn``): DQN on a Gymnasium environment with discrete actions, reading
numbers through an MLP or text through a frozen LM encoder (`langrl.agents.dqn_run`).

Every count of steps is in environment steps, all environments together, as SB3 and the RL Zoo count
them. The defaults are the RL Zoo's DQN settings for CartPole-v1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from langrl.config.base import MAX_LR, LogConfig, RunConfig, Section, validate
from langrl.config.distributed import DistributedConfig, env_shards_problem
from langrl.errors import ConfigError


class DQNEnvSection(Section):
    id: str = Field("CartPole-v1", description="a Gymnasium id with Discrete actions: numeric observations "
                    "(network.type mlp) or a langrl text environment such as langrl/CartPole-Text-v0 "
                    "(network.type lm_encoder)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of gymnasium.make")
    num_envs: int = Field(1, ge=1, description="parallel environments (one batched forward pass per step)")
    max_episode_steps: int | None = Field(None, ge=1, description="step limit; null keeps the env's own")


class NetworkSection(Section):
    type: Literal["mlp", "lm_encoder"] = Field(
        "mlp", description="mlp: an MLP on numeric observations; lm_encoder: the frozen LM `model` encodes "
        "the text observation (pooled, standardised hidden states, each distinct text once), an MLP head "
        "maps the features to action values")
    hidden: list[PositiveInt] = Field([256, 256], description="hidden layer sizes, each > 0, of the MLP (the head for "
                                      "lm_encoder)")
    layers: int | None = Field(None, ge=1, description="lm_encoder: run the LM's first N decoder blocks (then "
                               "its final norm); null: all. A middle layer is cheaper and often reads better")
    pooling: Literal["mean", "last"] = Field("mean", description="lm_encoder: average the text's hidden "
                                             "states, or take the last token's")
    normalize: bool = Field(True, description="lm_encoder: standardise each feature with running statistics "
                            "of the observations acted in (as VecNormalize); they are frozen in evaluation")
    max_tokens: int = Field(64, ge=1, description="lm_encoder: observation length in tokens (longer texts are "
                            "cut; CartPole-Text needs 36 with SmolLM2's tokenizer)")
    cache_size: int = Field(100_000, ge=0, description="lm_encoder: distinct observations whose features are "
                            "kept (LRU); the cache is saved with checkpoints so a resume computes the same")


class DQNSection(Section):
    """DQN's hyperparameters (Mnih et al. 2015), named as in SB3."""

    learning_rate: float = Field(2.3e-3, gt=0, le=MAX_LR, description=f"Adam learning rate, at most {MAX_LR}")
    buffer_size: int = Field(100_000, ge=1, description="replay buffer size in transitions")
    learning_starts: int = Field(1_000, ge=0, description="uniformly random steps before the first update")
    batch_size: int = Field(64, ge=1, description="transitions per gradient step")
    gamma: float = Field(0.99, ge=0, le=1, description="discount")
    train_freq: int = Field(256, ge=1, description="environment steps between training phases")
    gradient_steps: int = Field(128, ge=1, description="gradient steps per training phase")
    target_update_interval: int = Field(10, ge=1, description="environment steps between target updates")
    tau: float = Field(1.0, gt=0, le=1, description="target update weight: 1 copies, less is Polyak averaging")
    exploration_fraction: float = Field(0.16, ge=0, le=1, description="share of the steps over which epsilon "
                                        "decays linearly")
    exploration_initial_eps: float = Field(1.0, ge=0, le=1, description="epsilon when the decay starts")
    exploration_final_eps: float = Field(0.04, ge=0, le=1, description="epsilon after the decay")
    max_grad_norm: float = Field(10.0, ge=0, description="gradient norm clip; 0 disables")
    double_q: bool = Field(False, description="double DQN targets (van Hasselt et al. 2016)")


class DQNEvalSection(Section):
    """Periodic evaluation with best-network selection (as SB3's EvalCallback), then a test of the final and
    the best network on other seeds."""

    every: int = Field(5_000, ge=0, description="environment steps between evaluations of the greedy policy "
                       "(and at the end); the best network is kept; 0: no evaluation, no best network")
    episodes: int = Field(10, ge=1, description="episodes per evaluation, one per seed")
    seed_start: int = Field(1_000_000, ge=0, description="evaluation seeds: seed_start, seed_start + 1, ...")
    test_episodes: int = Field(20, ge=1, description="episodes of the final test of the final and the best "
                               "network (and the default of langrl eval)")
    test_seed_start: int = Field(2_000_000, ge=0, description="test seeds, disjoint from the evaluation seeds: "
                                 "the best network's score on the seeds that chose it is biased upward")
    parallel: int = Field(10, ge=1, description="episodes played side by side (one batched pass per step)")
    success: bool = Field(False, description="also report success_rate: an episode succeeds when it "
                          "terminates on a positive reward (BabyAI); CartPole has no success")


class DQNLogSection(LogConfig):
    every: int = Field(1_000, ge=1, description="environment steps between rows of metrics.jsonl")
    checkpoint_every: int = Field(10_000, ge=1, description="environment steps between checkpoints (the last "
                                  "step always)")
    sample_every: int = Field(10, ge=1, description="unused by DQN runs (they write no text samples)")


class DQNConfig(RunConfig):
    """A DQN run (``kind: dqn``). ``model`` is the LM of ``network.type: lm_encoder`` (unused by an MLP)."""

    kind: Literal["dqn"] = Field("dqn", description="the kind of run: DQN on a Gymnasium environment")
    steps: int = Field(50_000, ge=1, description="total environment steps (all environments together); "
                       "epsilon decays over exploration_fraction of them")
    env: DQNEnvSection = DQNEnvSection()
    network: NetworkSection = NetworkSection()
    dqn: DQNSection = DQNSection()
    eval: DQNEvalSection = DQNEvalSection()
    log: DQNLogSection = DQNLogSection()
    distributed: DistributedConfig = Field(DistributedConfig(), description="rollout workers on Ray: shards "
                                           "are slices of the env.num_envs environments, stepped between two "
                                           "training phases; set shards or rollout_workers to collect in shards "
                                           "(left empty: the single-process stream)")

    @property
    def collection_shards(self) -> int | None:
        """Shards the environments are collected in, or None for the single-process stream (``distributed``
        left empty: the step-by-step loop that existing runs and measured figures come from)."""
        dist = self.distributed
        return dist.shard_count if dist.remote or dist.shards is not None else None


def check_dqn_config(cfg: DQNConfig) -> None:
    """What one field alone cannot say: the cross-field rules, each a one-line `ConfigError`."""
    d, e = cfg.dqn, cfg.eval
    if d.learning_starts >= cfg.steps:
        raise ConfigError(f"invalid config: dqn.learning_starts = {d.learning_starts} >= steps = {cfg.steps}: "
                          f"DQN would never train; lower dqn.learning_starts or raise steps")
    if d.batch_size > d.buffer_size:
        raise ConfigError(f"invalid config: dqn.batch_size = {d.batch_size} > dqn.buffer_size = {d.buffer_size}: "
                          f"the buffer cannot hold one batch; raise dqn.buffer_size or lower dqn.batch_size")
    if e.every and max(e.seed_start, e.test_seed_start) < min(e.seed_start + e.episodes,
                                                              e.test_seed_start + e.test_episodes):
        raise ConfigError(f"invalid config: eval.test_seed_start = {e.test_seed_start}: the test seeds overlap the "
                          f"evaluation seeds {e.seed_start}..{e.seed_start + e.episodes - 1} that choose the best "
                          f"network; use test seeds outside them")
    problem = env_shards_problem(cfg.distributed, cfg.env.num_envs, "a dqn run")
    if problem is not None:
        raise ConfigError(f"invalid config: {problem}")
    if cfg.network.type == "mlp" and cfg.network.layers is not None:
        raise ConfigError(f"invalid config: network.layers = {cfg.network.layers} applies to network.type "
                          f"lm_encoder only; remove it or set network.type: lm_encoder")


def dqn_config_from_data(data: dict[str, Any], base: Path | None = None) -> DQNConfig:
    """Validate the raw mapping of a DQN run (``base``, the YAML's folder, is unused: no paths)."""
    config: DQNConfig = validate(DQNConfig, data)
    check_dqn_config(config)
    return config
