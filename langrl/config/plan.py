"""The config of a planning run (``kind: plan``, `langrl.planning`).

- ``algorithm: search``: a planner (MCTS, beam search, BFS) chooses every action of an agent by imagining
  ahead with a world model (exact: a copy of the real environment; tabular: counts from random episodes;
  lm: an LM trained by a ``kind: world_model`` run);
  ``model`` is the LM whose prior over the action strings guides the search, or ``uniform``.
  ``langrl eval`` measures it on held-out seeds; there is nothing to train.
- ``algorithm: dyna``: Dyna with soft Q-learning on the toy token MDP of ``task`` (``model`` is the
  reference LM pi0, e.g. ``toy``), trained for ``steps`` steps through the run harness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from langrl.config.agent import PRIOR_TEMPLATE
from langrl.config.base import LogConfig, RunConfig, Section, validate
from langrl.rewards import RewardSpec, parse_reward_spec

UNIFORM = "uniform"  # ``model: uniform``: no LM, a uniform prior over the actions


class PlanEnvSection(Section):
    id: str = Field("langrl/BabyAI-GoToLocal-Text-v0", description="a Gymnasium id: a langrl BabyAI text "
                    "environment (exact minigrid model), or one with a transition table P (FrozenLake-v1, ...)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of gymnasium.make")
    max_episode_steps: int | None = Field(None, ge=1, description="step limit; null keeps the env's own")


class WorldModelSection(Section):
    type: Literal["exact", "tabular", "lm"] = Field(
        "exact", description="exact: the real environment's own dynamics on a copy of its state (minigrid, or "
        "a transition table); tabular: counts of transitions seen in random episodes (discrete envs); lm: an LM "
        "world model trained by a kind: world_model run (path), imagining from the real text observation")
    path: str | None = Field(None, description="lm: the world_model run folder (its newest checkpoint) or one "
                             "of its checkpoints/step-N")
    cache_size: int = Field(100_000, ge=0, description="(state, action) answers kept in an LRU cache; 0: none")
    explore_episodes: int = Field(200, ge=1, description="tabular: random episodes that fill the counts")
    explore_seed_start: int = Field(0, ge=0, description="tabular: their seeds are explore_seed_start, ...")


class PlannerSection(Section):
    type: Literal["mcts", "beam", "bfs"] = Field("mcts", description="mcts (PUCT), beam search, or BFS")
    simulations: int = Field(100, ge=1, description="mcts: simulations per decision")
    c_puct: float = Field(1.0, ge=0, description="mcts: weight of the prior in the exploration term")
    gamma: float = Field(0.99, ge=0, le=1, description="discount per imagined step")
    max_depth: int = Field(30, ge=1, description="actions from the current state to the deepest imagined one "
                                                 "(mcts: tree depth; beam and bfs: plan length)")
    value: Literal["rollout", "zero"] = Field("rollout", description="leaf value: random rollouts, or 0")
    rollout_depth: int = Field(20, ge=1, description="steps of a random rollout")
    max_calls: int | None = Field(None, ge=1, description="world-model queries per decision; null: no limit")
    unvisited_value: float = Field(0.0, description="mcts: Q of an action never tried at a node")
    width: int = Field(8, ge=1, description="beam: plans kept per depth")
    prior_weight: float = Field(0.0, ge=0, description="beam: weight of the summed prior log-probability in "
                                                       "a plan's score (needs an LM model)")


class PriorSection(Section):
    """The LM prior over action strings (`langrl.agents.prior.LMActionPrior`) when ``model`` is an LM."""

    template: str = Field(PRIOR_TEMPLATE, description="prompt text with {actions} and {observation}")
    chat: bool | None = Field(None, description="wrap the prompt in the chat template; null: when it has one")
    sep: str = Field(" ", description="text between the prompt and an action string (without chat)")
    temperature: float = Field(1.0, gt=0, description="> 1 flattens the prior")
    calibrate: bool = Field(False, description="divide out the prior of a content-free observation")


class PlanEvalSection(Section):
    episodes: int = Field(100, ge=1, description="evaluation episodes, one per held-out seed")
    seed_start: int = Field(1_000_000, ge=0, description="held-out seeds are seed_start, seed_start + 1, ...")


class ToyTaskSection(Section):
    """The toy token MDP of configs/toy_exact.yaml: the reference LM writes ``length`` tokens after
    ``prompt``; every completion is enumerated, so pi* = pi0 exp(r / beta) / Z is exact."""

    prompt: str = Field("a", description="the prompt (no chat template)")
    length: int = Field(4, ge=1, le=8, description="tokens per completion (V**length completions)")
    beta: float = Field(0.2, gt=0, description="the KL coefficient: pi* = pi0 exp(r / beta) / Z")
    reward: RewardSpec | list[RewardSpec] = Field(
        default_factory=lambda: parse_reward_spec({"type": "python", "function": "langrl.envs.toy:letter_reward",
                                                   "kwargs": {"letter": "a"}}),
        description="the reward of a completion (default: the share of the letter a)")


class DynaSection(Section):
    episodes: int = Field(32, ge=1, description="real episodes (completions) per step")
    planning_updates: int = Field(5, ge=0, description="imagined transitions per real transition (Dyna's n; "
                                                       "0: model-free soft Q-learning)")
    batch_size: int = Field(256, ge=1, description="imagined transitions per batched update")
    alpha: float = Field(1.0, gt=0, le=1, description="step size of the soft Q updates")


class PlanConfig(RunConfig):
    """A planning run (``kind: plan``): search with a world model, or Dyna (see the module doc)."""

    kind: Literal["plan"] = Field("plan", description="the kind of run")
    algorithm: Literal["search", "dyna"] = Field("search", description="search: a planner acts (evaluate "
                                                 "it); dyna: learn from real and imagined experience (train it)")
    model: str = Field(UNIFORM, description="search: the LM of the action prior, or 'uniform'; dyna: the "
                                            "reference LM pi0 (e.g. 'toy')")
    steps: int = Field(200, ge=1, description="dyna: training steps")
    env: PlanEnvSection = PlanEnvSection()
    world_model: WorldModelSection = WorldModelSection()
    planner: PlannerSection = PlannerSection()
    prior: PriorSection = PriorSection()
    eval: PlanEvalSection = PlanEvalSection()
    task: ToyTaskSection = ToyTaskSection()
    dyna: DynaSection = DynaSection()
    log: LogConfig = Field(LogConfig(checkpoint_every=50), description="dyna: logging and checkpoints")

    @model_validator(mode="after")
    def consistent(self) -> PlanConfig:
        if self.algorithm == "dyna" and self.model == UNIFORM:
            raise ValueError("algorithm dyna needs model: the reference LM pi0 (e.g. toy), not 'uniform'")
        if self.world_model.type == "lm" and not self.world_model.path:
            raise ValueError("world_model.path: world_model.type lm needs the folder of a world_model run (or one "
                             "of its checkpoints), e.g. --set world_model.path=runs/world_model_babyai-...")
        if self.planner.prior_weight and self.model == UNIFORM:
            raise ValueError("planner.prior_weight > 0 needs an LM model for the prior, not 'uniform'")
        for placeholder in ("{observation}", "{actions}"):
            if placeholder not in self.prior.template:
                raise ValueError(f"prior.template must contain {placeholder}")
        return self


def plan_config_from_data(data: dict[str, Any], base: Path | None = None) -> PlanConfig:
    """Validate the raw mapping of a planning run (the reward union gets its own messages)."""
    task = data.get("task")
    if isinstance(task, dict) and "reward" in task:
        reward = task["reward"]
        task = dict(task)
        if isinstance(reward, list):
            task["reward"] = [parse_reward_spec(r, f"task.reward[{i}]") for i, r in enumerate(reward)]
        else:
            task["reward"] = parse_reward_spec(reward, "task.reward")
        data = {**data, "task": task}
    config: PlanConfig = validate(PlanConfig, data)
    return config


__all__ = ["DynaSection", "PlanConfig", "PlanEnvSection", "PlanEvalSection", "PlannerSection", "PriorSection",
           "ToyTaskSection", "WorldModelSection", "plan_config_from_data"]
