"""The config of a tabular run (``kind: tabular``): TD learning with a table of Q values on a discrete
Gymnasium environment or on the toy token MDP (`langrl.agents.tabular`, `langrl.agents.tabular_run`).
``log`` is the shared section of `langrl.config.base`; its ``checkpoint_every`` counts chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from langrl.config.base import LogConfig, RunConfig, Section, read_config_data, show, validate
from langrl.errors import ConfigError
from langrl.rewards import RewardSpec, parse_reward_spec

TOKEN_TREE = "langrl/TokenTree"  # the toy token MDP: the config's model writes env.length tokens


class TabularEnvSection(Section):
    id: str = Field("FrozenLake-v1", description=f"a Gymnasium id with Discrete observations and actions "
                    f"(FrozenLake-v1, CliffWalking-v1, Taxi-v4, ...), or {TOKEN_TREE}: the config's model "
                    f"writes 'length' tokens after 'prompt', rewarded by 'reward' (its whole vocabulary is the "
                    f"action set: model toy)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of gymnasium.make")
    max_episode_steps: int | None = Field(None, ge=1, description="step limit; null keeps the env's own")
    prompt: str = Field("a", description=f"{TOKEN_TREE}: the text before the completion")
    length: int = Field(4, ge=1, le=12, description=f"{TOKEN_TREE}: tokens per completion (V^length of them)")
    reward: RewardSpec | list[RewardSpec] | None = Field(None, description=f"{TOKEN_TREE}: the reward of a "
                                                         f"completion, as the reward of an LM run")


class ExplorationSection(Section):
    kind: Literal["epsilon", "boltzmann", "ucb"] = Field(
        "epsilon", description="epsilon: epsilon-greedy; boltzmann: softmax(Q / temperature); ucb: argmax "
        "Q(s, a) + c sqrt(ln N(s) / n(s, a)), untried actions first")
    start: float = Field(1.0, ge=0, description="epsilon (in [0, 1]) or temperature (> 0) at the first step")
    end: float = Field(0.1, ge=0, description="epsilon or temperature after 'fraction' of the steps")
    fraction: float = Field(0.5, ge=0, le=1, description="share of the steps over which start moves linearly "
                                                         "to end")
    c: float = Field(1.0, ge=0, description="ucb: the bonus scale")


class TabularEvalSection(Section):
    episodes: int = Field(100, ge=0, description="greedy-policy episodes, one per held-out seed; 0: none")
    seed_start: int = Field(1_000_000, ge=0, description="held-out seeds are seed_start, seed_start + 1, ...")
    every: int = Field(0, ge=0, description="chunks between evaluations; 0: only at the end")
    max_steps: int = Field(1000, ge=1, description="an evaluation episode stops here (a greedy policy may loop "
                                                   "forever where the env has no step limit)")
    greedy: bool = Field(True, description="act greedily on Q; false (soft_q only): sample the soft policy "
                                           "pi0 exp(Q / beta) / Z")


class TabularConfig(RunConfig):
    """A tabular run (``kind: tabular``): ``env``, ``method`` and ``steps`` are the essentials."""

    kind: Literal["tabular"] = Field("tabular", description="the kind of run")
    model: str = Field("toy", description=f"{TOKEN_TREE}: the LM that writes the tokens and is the soft-Q "
                                          f"reference pi0 (unused by Gymnasium envs)")
    threads: int = Field(1, ge=0, description="CPU threads for torch; the tables are tiny, so one thread "
                                              "avoids thread-pool overhead; 0 keeps torch's default")
    env: TabularEnvSection = TabularEnvSection()
    method: Literal["q_learning", "double_q", "sarsa", "expected_sarsa", "soft_q"] = Field(
        "q_learning", description="the TD target (langrl.agents.tabular.METHODS)")
    gamma: float = Field(0.99, ge=0, le=1, description="discount per step")
    steps: int = Field(100_000, ge=1, description="environment steps (all environments together)")
    chunk_steps: int = Field(10_000, ge=1, description="environment steps per chunk: one row of metrics, one "
                                                       "tick of the progress bar")
    num_envs: int = Field(8, ge=1, description="environments stepping together (one batched update a step)")
    exploration: ExplorationSection = ExplorationSection()
    alpha0: float = Field(1.0, gt=0, le=1, description="step size alpha0 / n(s, a)^omega")
    omega: float = Field(0.6, ge=0, le=1, description="step-size decay; (0.5, 1] converges with stochastic "
                                                      "targets, 0 keeps alpha0 (exact on deterministic tasks "
                                                      "with alpha0 = 1)")
    n_step: int = Field(1, ge=1, le=100, description="rewards summed before bootstrapping (n-step returns; "
                                                     "q_learning and double_q with n > 1 are biased)")
    beta: float = Field(1.0, gt=0, description="soft_q: the weight of KL(pi || pi0); pi0 is the model for "
                                               f"{TOKEN_TREE}, uniform otherwise")
    eval: TabularEvalSection = TabularEvalSection()
    log: LogConfig = Field(LogConfig(checkpoint_every=10), description="checkpoint_every counts chunks")

    @property
    def chunks(self) -> int:
        """Chunks of ``chunk_steps`` environment steps within ``steps`` (the last may be shorter)."""
        return -(-self.steps // self.chunk_steps)


def consistency_errors(config: TabularConfig) -> list[str]:
    """What the fields allow one by one but not together, one line each."""
    errors = []
    env, explore = config.env, config.exploration
    if env.id == TOKEN_TREE and env.reward is None:
        errors.append(f"env.reward: required for env.id {TOKEN_TREE}, e.g. {{type: python, function: "
                      f"'langrl.envs.toy:letter_reward', kwargs: {{letter: a}}}}")
    if env.id == TOKEN_TREE and env.kwargs:
        errors.append(f"env.kwargs = {show(env.kwargs)}: {TOKEN_TREE} takes prompt, length and reward, not "
                      f"kwargs; remove them")
    if env.id != TOKEN_TREE and env.reward is not None:
        errors.append(f"env.reward: only env.id {TOKEN_TREE} takes a reward; {env.id!r} has its own; remove it")
    if explore.kind == "epsilon" and max(explore.start, explore.end) > 1:
        errors.append(f"exploration.start = {explore.start}, exploration.end = {explore.end}: an epsilon is a "
                      f"probability, in [0, 1]")
    if explore.kind == "boltzmann" and min(explore.start, explore.end) <= 0:
        errors.append(f"exploration.start = {explore.start}, exploration.end = {explore.end}: a temperature "
                      f"must be > 0")
    if not config.eval.greedy and config.method != "soft_q":
        errors.append(f"eval.greedy = false: only method soft_q has a stochastic policy to sample "
                      f"(method = {config.method!r}); set eval.greedy true")
    for name in ("steps", "chunk_steps"):
        if getattr(config, name) < config.num_envs:
            errors.append(f"{name} = {getattr(config, name)}: less than one step of every environment "
                          f"(num_envs = {config.num_envs}); raise it or lower num_envs")
    return errors


def tabular_config_from_data(data: dict[str, Any], base: Path | None = None) -> TabularConfig:
    """Validate the raw mapping of a tabular run (``base``, the YAML's folder, is not needed)."""
    env = data.get("env")
    if isinstance(env, dict) and env.get("reward") is not None:  # the reward union's own messages
        reward = env["reward"]
        env = dict(env)
        env["reward"] = ([parse_reward_spec(item, f"env.reward[{i}]") for i, item in enumerate(reward)]
                         if isinstance(reward, list) else parse_reward_spec(reward, "env.reward"))
        data = {**data, "env": env}
    config: TabularConfig = validate(TabularConfig, data)
    errors = consistency_errors(config)
    if errors:
        raise ConfigError("invalid config: " + errors[0] if len(errors) == 1 else
                          "invalid config:\n  " + "\n  ".join(errors))
    return config


def load_tabular_config(source: str | Path | dict[str, Any] | TabularConfig,
                        overrides: list[str] | tuple[str, ...] = ()) -> TabularConfig:
    """Read YAML (or take a dict), apply ``key=value`` overrides, validate."""
    if isinstance(source, TabularConfig):
        return source
    data, base = read_config_data(source, overrides)
    return tabular_config_from_data(data, base)
