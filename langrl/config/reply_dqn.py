"""The config of reply selection with DQN (``kind: reply_dqn``): the frozen LM samples K candidate replies per
turn, a Q-network over (history, candidate) features picks one (`langrl.agents.reply_dqn`).

Counts: ``reply_dqn.episodes`` training episodes, played ``reply_dqn.parallel`` at a time; one such group is a
*round*, the run's step (``metrics.jsonl`` has one row per round, ``log.checkpoint_every`` counts rounds).
Replay counts (``buffer_size``, ``learning_starts``, ``train_every``) are in transitions (one per turn of one
episode); ``target_update_every`` is in gradient steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from langrl.config.base import MAX_LR, LogConfig, RunConfig, Section, validate
from langrl.config.dialogue import DialogueEnvConfig
from langrl.config.distributed import DistributedConfig, env_shards_problem
from langrl.errors import ConfigError


class CandidateSampling(Section):
    """How the frozen LM samples each turn's candidate replies."""

    max_new_tokens: int = Field(32, ge=1, description="length cap of each candidate reply, in tokens")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of candidate sampling (the base "
                               "policy the best-of-K KL bound refers to)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass; 1 disables")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens; 0 disables")


class ReplyDQNSection(Section):
    """DQN over the K candidates of each turn (Mnih et al. 2015): replay of LM features, a target network,
    Huber loss, gradient clipping, hard target updates, linearly decayed epsilon-greedy selection."""

    candidates: int = Field(4, ge=2, le=64, description="K: candidate replies sampled per turn (one is chosen)")
    episodes: int = Field(200, ge=1, description="training episodes")
    parallel: int = Field(8, ge=1, description="episodes played together (a round: one sampling call and one "
                          "feature pass per turn for all of them); the last round may be smaller")
    gamma: float = Field(0.9, ge=0, le=1, description="discount per turn")
    lr: float = Field(1e-3, gt=0, le=MAX_LR, description=f"Adam learning rate of the Q-network, at most {MAX_LR}")
    hidden: list[PositiveInt] = Field([256], description="hidden layer sizes, each > 0, of the Q-network's MLP")
    normalize: bool = Field(True, description="standardise history and candidate features with running "
                            "statistics of the features seen in training (pooled LM states have a few huge, "
                            "nearly constant dimensions); frozen in evaluation")
    buffer_size: int = Field(5_000, ge=1, description="replay buffer size in transitions (each holds the features "
                             "of two states: 2 (K + 1) hidden-size float32 vectors)")
    batch_size: int = Field(32, ge=1, description="transitions per gradient step")
    learning_starts: int = Field(64, ge=0, description="transitions collected before the first gradient step")
    train_every: int = Field(1, ge=1, description="transitions between training phases")
    gradient_steps: int = Field(1, ge=1, description="gradient steps per training phase")
    target_update_every: int = Field(50, ge=1, description="gradient steps between hard copies of the online "
                                     "network into the target network")
    double_q: bool = Field(False, description="double-DQN targets: the online network picks the next candidate, "
                           "the target network values it (van Hasselt et al. 2016)")
    max_grad_norm: float = Field(10.0, ge=0, description="gradient norm clip; 0 disables")
    exploration_initial_eps: float = Field(1.0, ge=0, le=1, description="epsilon (chance of a uniformly random "
                                           "candidate) at the first episode")
    exploration_final_eps: float = Field(0.05, ge=0, le=1, description="epsilon after the decay")
    exploration_fraction: float = Field(0.5, ge=0, le=1, description="share of the training episodes over which "
                                        "epsilon decays linearly")


class ReplyEvalSection(Section):
    episodes: int = Field(32, ge=0, description="held-out episodes (env.eval_kwargs) played after training by "
                          "the greedy Q-selector and by the first candidate (the base LM's own sample), same "
                          "reset seeds and sampling seeds; 0: none")
    batch: int = Field(16, ge=1, description="evaluation episodes played together")
    user_oracle: bool = Field(False, description="also play the episodes choosing the candidate the simulated user "
                              "rewards most (stepping a copy of its environment with each): the most any selector "
                              "over these candidates could gain one turn ahead; rule-based users only")


class ReplyLogSection(LogConfig):
    sample_every: int = Field(5, ge=1, description="rounds between rows of samples.jsonl")
    checkpoint_every: int = Field(5, ge=1, description="rounds between checkpoints (the last round always)")


class ReplyDQNConfig(RunConfig):
    """Reply selection with DQN (``kind: reply_dqn``): a Q-network picks one of K replies sampled from the LM.

    The Q-network reads the frozen LM's features of the history and of each candidate and is trained from the
    simulated user's per-turn rewards; the LM never changes."""

    kind: Literal["reply_dqn"] = Field("reply_dqn", description="the kind of run: reply_dqn (a DQN dialogue "
                                       "manager choosing among sampled replies)")
    env: DialogueEnvConfig = DialogueEnvConfig()
    sampling: CandidateSampling = CandidateSampling()
    reply_dqn: ReplyDQNSection = ReplyDQNSection()
    eval: ReplyEvalSection = ReplyEvalSection()
    log: ReplyLogSection = ReplyLogSection()
    distributed: DistributedConfig = Field(DistributedConfig(), description="rollout workers on Ray: shards "
                                           "are contiguous slices of a round's reply_dqn.parallel episodes, each "
                                           "played with the round's start weights; set shards or rollout_workers "
                                           "to play in shards (left empty: the single-process stream)")

    @property
    def collection_shards(self) -> int | None:
        """Shards a round's episodes are played in, or None for the single-process stream (``distributed`` left
        empty: the loop that learns as transitions arrive, which existing runs and figures come from)."""
        dist = self.distributed
        return dist.shard_count if dist.remote or dist.shards is not None else None


def check_reply_dqn_config(cfg: ReplyDQNConfig) -> None:
    """The cross-field rules, each a one-line `ConfigError` naming the fields, their values and the fix."""
    d = cfg.reply_dqn
    if d.batch_size > d.buffer_size:
        raise ConfigError(f"invalid config: reply_dqn.batch_size = {d.batch_size} > reply_dqn.buffer_size = "
                          f"{d.buffer_size}: the buffer cannot hold one batch; raise reply_dqn.buffer_size or lower "
                          f"reply_dqn.batch_size")
    if d.exploration_final_eps > d.exploration_initial_eps:
        raise ConfigError(f"invalid config: reply_dqn.exploration_final_eps = {d.exploration_final_eps} > "
                          f"reply_dqn.exploration_initial_eps = {d.exploration_initial_eps}: epsilon decays; give "
                          f"a final epsilon at most the initial one")
    problem = env_shards_problem(cfg.distributed, d.parallel, "a reply_dqn run", "reply_dqn.parallel", "an episode")
    if problem is not None:
        raise ConfigError(f"invalid config: {problem}")


def reply_dqn_config_from_data(data: dict[str, Any], base: Path | None = None) -> ReplyDQNConfig:
    """Validate the raw mapping of a reply-DQN run (``base``, the YAML's folder, is unused: no paths)."""
    config: ReplyDQNConfig = validate(ReplyDQNConfig, data)
    check_reply_dqn_config(config)
    return config
