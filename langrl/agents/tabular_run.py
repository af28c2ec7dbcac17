"""A tabular run (``kind: tabular``): `langrl.agents.tabular`'s learner on a discrete Gymnasium environment
or the toy token MDP, in chunks, through the run harness.

    config -> task (environment factory, reference pi0, exact oracle) -> TabularLearner
           -> repeat: advance chunk_steps env steps -> exact errors -> [greedy evaluation] -> harness
           -> q_table.safetensors, report

Each chunk logs ``env/steps``, ``rollout/episode_return`` (mean over the episodes that ended in it),
``td/abs_error`` and the exploration parameter; where the environment exposes its model (``P``: the
toy-text environments and the token MDP) also ``exact/max_abs_error`` = max |Q - Q*| over the states
updated so far (Q* the soft optimum for soft_q), ``exact/greedy_regret``, and for soft Q on the token MDP
``exact/kl_to_optimum`` = KL(pi || pi*) of the table's policy pi = pi0 exp(Q / beta) / Z composed over the
whole completion, against the posterior pi* = pi0 exp(r / beta) / Z of `langrl.bayes`. The greedy policy
is evaluated on held-out seeds (``eval/mean_return``, ``eval/success_rate`` where the environment has a
goal) at the end and every ``eval.every`` chunks. The learner (tables, environments mid-episode, buffers,
generator) is the checkpoint, so a resumed run computes what the uninterrupted one does.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from langrl.agents.tabular import (
    Exploration,
    TabularLearner,
    greedy_policy,
    soft_value_iteration,
    tabular_model,
    value_iteration,
)
from langrl.bayes.exact import compare_to_optimum, enumerate_sequences
from langrl.config.tabular import TOKEN_TREE, TabularConfig, load_tabular_config
from langrl.envs.token_mdp import TokenTree, TokenTreeEnv, prefix_logprobs, sequence_logprobs
from langrl.errors import ConfigError
from langrl.report.agent import summarise_agent, write_agent_report
from langrl.rewards import build_reward
from langrl.rl.td import soft_policy
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import list_checkpoints, load_objects
from langrl.run.harness import Checkpointed, RunHarness, TrainResult, resolve_run_dir, run_name
from langrl.run.io import atomic_write_bytes

log = logging.getLogger("langrl")

Q_TABLE = "q_table.safetensors"  # the run folder's latest table: q (S, A), counts and visits (S, A)
MAX_COMPLETIONS = 1_000_000  # the token MDP enumerates V^L completions


# ---------------------------------------------------------------------------------------------- task

def goal_reached(reward: float, terminated: bool) -> bool:
    """FrozenLake: the episode ends in a hole (reward 0) or at the goal (reward 1)."""
    return terminated and reward > 0


def terminated_at_goal(reward: float, terminated: bool) -> bool:
    """CliffWalking, Taxi: only reaching the goal (a drop-off) terminates; falls and errors do not."""
    return terminated


# What success means, by Gymnasium env name; environments not named here have no success rate.
SUCCESS: dict[str, Callable[[float, bool], bool]] = {
    "FrozenLake": goal_reached, "FrozenLake8x8": goal_reached, "CliffWalking": terminated_at_goal,
    "Taxi": terminated_at_goal,
}


@dataclass
class Sequences:
    """The token MDP's whole completions: their rewards and pi0 log-probabilities (V^L,), lexicographic."""

    tree: TokenTree
    rewards: torch.Tensor
    ref_logprobs: torch.Tensor


@dataclass
class Task:
    """What a run needs of its environment: a factory, pi0 (None: uniform), the exact optimum of the method
    (None without a model), success, and the token MDP's completions."""

    make: Callable[[], gym.Env]
    ref_logprobs: torch.Tensor | None
    oracle: torch.Tensor | None
    success: Callable[[float, bool], bool] | None
    sequences: Sequences | None


def make_gym_env(env_id: str, kwargs: dict[str, Any], max_episode_steps: int | None) -> gym.Env:
    """``gymnasium.make`` with the config's errors (module level, so a ``partial`` of it pickles)."""
    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    except gym.error.Error as e:
        raise ConfigError(f"env.id = {env_id!r}: {e}; use a registered id such as FrozenLake-v1, "
                          f"CliffWalking-v1 or Taxi-v4, or {TOKEN_TREE}") from None
    except TypeError as e:
        raise ConfigError(f"env.kwargs = {kwargs!r}: {env_id} does not take them ({e})") from None


def token_tree(cfg: TabularConfig) -> tuple[Callable[[], gym.Env], torch.Tensor, Sequences]:
    """The token MDP of the config's model: factory, pi0 per prefix (S, V), the completions."""
    from langrl.models import load_lm  # the LM stack only where an LM is used

    lm = load_lm(cfg.model, dtype="float32", device="cpu", seed=cfg.seed)
    vocab, length = int(lm.model.get_output_embeddings().weight.shape[0]), cfg.env.length
    if vocab**length > MAX_COMPLETIONS:
        raise ConfigError(f"env.length = {length}: model {cfg.model!r} has {vocab} tokens, so {vocab}^{length} "
                          f"completions, over {MAX_COMPLETIONS}; lower env.length or use model toy")
    tree = TokenTree(vocab, length)
    ref = prefix_logprobs(lm.model, lm.tokenizer(cfg.env.prompt)["input_ids"], tree)
    texts = lm.tokenizer.batch_decode(enumerate_sequences(vocab, length))
    assert cfg.env.reward is not None  # checked by the config
    reward = build_reward(cfg.env.reward)
    rewards = torch.tensor(reward([cfg.env.prompt] * len(texts), texts), dtype=torch.float64)
    make = functools.partial(TokenTreeEnv, rewards.tolist(), vocab, length)
    return make, ref, Sequences(tree, rewards, sequence_logprobs(tree, ref))


def build_task(cfg: TabularConfig) -> Task:
    """The config's environment, reference, oracle and notion of success."""
    sequences = None
    if cfg.env.id == TOKEN_TREE:
        make, ref, sequences = token_tree(cfg)
    else:
        make = functools.partial(make_gym_env, cfg.env.id, cfg.env.kwargs, cfg.env.max_episode_steps)
        ref = None
    env = make()
    spec_name = env.spec.name if env.spec is not None else None
    success = SUCCESS.get(spec_name) if spec_name else None
    oracle = exact_optimum(cfg, env, ref)
    env.close()
    return Task(make, ref, oracle, success, sequences)


def exact_optimum(cfg: TabularConfig, env: gym.Env, ref: torch.Tensor | None) -> torch.Tensor | None:
    """Q* of the env's own model (the soft optimum for soft_q), or None where there is no model."""
    try:
        model = tabular_model(env)
    except ConfigError:
        return None
    try:
        if cfg.method == "soft_q":
            n_s, n_a = model.R.shape
            pi0 = ref if ref is not None else torch.full((n_s, n_a), -float(np.log(n_a)), dtype=torch.float64)
            return soft_value_iteration(model, cfg.gamma, cfg.beta, pi0, tol=1e-10)
        return value_iteration(model, cfg.gamma, tol=1e-10)
    except RuntimeError as e:
        log.warning("no exact optimum: %s", e)
        return None


def new_learner(cfg: TabularConfig, task: Task) -> TabularLearner:
    ex = cfg.exploration
    return TabularLearner(task.make, cfg.method, cfg.gamma, cfg.steps, cfg.num_envs,
                          Exploration(ex.kind, ex.start, ex.end, ex.fraction, ex.c), cfg.alpha0, cfg.omega,
                          cfg.beta, task.ref_logprobs, cfg.n_step, cfg.seed)


# ---------------------------------------------------------------------------------------------- measures

def exact_metrics(q: torch.Tensor, counts: torch.Tensor, task: Task, cfg: TabularConfig) -> dict[str, float]:
    """How far the table is from the exact optimum over the states updated so far (``counts`` (S, A)), and
    for soft Q on the token MDP, KL(pi || pi*) over whole completions."""
    seen = counts.sum(-1) > 0
    if task.oracle is None or not bool(seen.any()):
        return {}
    if task.oracle.shape != q.shape:
        raise ConfigError(f"the table has shape {tuple(q.shape)} but env {cfg.env.id} has "
                          f"{tuple(task.oracle.shape)} (states, actions): was it learned on another env?")
    out = {"exact/max_abs_error": float((q - task.oracle).abs()[seen].max()), "exact/visited_states": float(seen.sum())}
    if cfg.method != "soft_q":  # how much worse, under Q*, the greedy action is than the best (0: optimal)
        chosen = task.oracle.gather(-1, greedy_policy(q)[:, None]).squeeze(-1)
        out["exact/greedy_regret"] = float((task.oracle.amax(-1) - chosen)[seen].max())
    if task.sequences is not None and cfg.method == "soft_q" and task.ref_logprobs is not None:
        s = task.sequences
        pi = sequence_logprobs(s.tree, soft_policy(q, task.ref_logprobs, cfg.beta))
        report = compare_to_optimum(pi, s.ref_logprobs, s.rewards, cfg.beta)
        out.update({"exact/kl_to_optimum": report.kl_pi_to_opt, "exact/reward": report.reward_pi})
    return out


def evaluate_table(q: torch.Tensor, task: Task, cfg: TabularConfig, episodes: int) -> dict[str, float]:
    """The table's policy on ``episodes`` held-out seeds (``eval.seed_start`` on): its most likely action
    (argmax Q; for soft_q, the mode of pi0 exp(Q / beta) / Z), or with ``eval.greedy`` false the soft policy
    sampled with a generator seeded by the episode's seed."""
    env = task.make()
    logits = q
    if cfg.method == "soft_q":
        ref = task.ref_logprobs if task.ref_logprobs is not None else torch.zeros_like(q)  # uniform pi0
        logits = soft_policy(q, ref, cfg.beta)
    greedy = greedy_policy(logits).tolist()
    policy = None if cfg.eval.greedy else logits.exp()
    returns, successes = [], []
    for i in range(episodes):
        seed = cfg.eval.seed_start + i
        state, _ = env.reset(seed=seed)
        generator = torch.Generator().manual_seed(seed)
        total, reached = 0.0, False
        for _ in range(cfg.eval.max_steps):
            action = greedy[state] if policy is None else int(torch.multinomial(policy[state], 1, generator=generator))
            state, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            if terminated or truncated:
                reached = task.success is not None and task.success(float(reward), bool(terminated))
                break
        returns.append(total)
        successes.append(reached)
    env.close()
    out = {"mean_return": float(np.mean(returns)), "episodes": float(episodes)}
    if task.success is not None:
        out["success_rate"] = float(np.mean(successes))
    return out


# ---------------------------------------------------------------------------------------------- train

def save_q_table(run_dir: Path, learner: TabularLearner) -> Path:
    """Write the learner's table (the mean of double Q's two), update counts and visits to the run folder."""
    path = run_dir / Q_TABLE
    tensors = {"q": learner.q.contiguous(), "counts": learner.counts.sum(0), "visits": learner.visits}
    atomic_write_bytes(path, save_safetensors(tensors, metadata={"method": learner.method,
                                                                 "env_steps": str(learner.env_steps)}))
    return path


def train_tabular(config: TabularConfig | dict[str, Any] | str | Path, output: str | Path | None = None,
                  resume: bool = False, allow_config_change: bool = False,
                  callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a table as ``config`` (``kind: tabular``) says, in chunks of ``chunk_steps`` environment steps.

    The run folder holds ``config.yaml``, ``metrics.jsonl`` (one row per chunk), checkpoints (the whole
    learner), ``q_table.safetensors`` (rewritten at every checkpoint) and the report. A resumed run logs
    and learns what the uninterrupted run does; more ``steps`` on resume extend it (the exploration
    schedule keeps the horizon it started with). ``callbacks`` see every chunk's row and may stop the run
    (`langrl.run.callbacks`).
    """
    cfg = load_tabular_config(config)
    run_dir = resolve_run_dir(run_name(config, "tabular"), output, resume)
    with torch_threads(cfg.threads):
        return run_tabular(cfg, run_dir, resume, allow_config_change, callbacks)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (0: unchanged) inside, restored after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_tabular(cfg: TabularConfig, run_dir: Path, resume: bool, allow_config_change: bool,
                callbacks: Sequence[Callback]) -> TrainResult:
    task = build_task(cfg)
    parts = Checkpointed(model=None, tokenizer=None, optimizer=None, objects={"learner": new_learner(cfg, task)})
    last: dict[str, float] = {}
    with RunHarness(run_dir, cfg, cfg.log, parts, allow_config_change, callbacks) as harness:
        state = harness.restore() if resume else {}
        if state:
            parts.objects["learner"].close()  # the fresh one was replaced by the checkpoint's
        learner: TabularLearner = parts.objects["learner"]
        clock = time.perf_counter() - float(state.get("elapsed_s", 0.0))
        with harness.session(total=cfg.chunks, desc=cfg.method) as logger:
            for chunk in harness.steps(cfg.chunks):
                last = run_chunk(cfg, task, learner, chunk)
                last["time/elapsed_s"] = time.perf_counter() - clock
                harness.log(logger, chunk, last)
                if harness.due(chunk, cfg.chunks):
                    harness.checkpoint(chunk, {"env_steps": learner.env_steps,
                                               "elapsed_s": time.perf_counter() - clock})
                    save_q_table(run_dir, learner)
                harness.advance(ret=last.get("rollout/episode_return", float("nan")),
                                err=last.get("exact/max_abs_error", float("nan")))
        save_q_table(run_dir, learner)
    learner.close()
    write_agent_report(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summarise_tabular(run_dir, cfg, last))


def summarise_tabular(run_dir: Path, cfg: TabularConfig, last: dict[str, float]) -> dict[str, Any]:
    """The agent-run summary, the last exact errors, and headline lines for the command line."""
    exact = {k: v for k, v in last.items() if k.startswith("exact/")}
    lines = [f"{cfg.method} on {cfg.env.id}: {int(last.get('env/steps', 0))} env steps"]
    if "eval/mean_return" in last:
        rate = f", success rate {last['eval/success_rate']:.3f}" if "eval/success_rate" in last else ""
        lines.append(f"greedy policy on {int(last['eval/episodes'])} held-out seeds: mean return "
                     f"{last['eval/mean_return']:.3f}{rate}")
    if exact:
        lines.append("exact: " + ", ".join(f"{k.removeprefix('exact/')} {v:.4g}" for k, v in exact.items()))
    return {**summarise_agent(run_dir), "exact": exact, "headline": lines}


def run_chunk(cfg: TabularConfig, task: Task, learner: TabularLearner, chunk: int) -> dict[str, float]:
    """Advance to ``min(chunk * chunk_steps, steps)`` environment steps; measure."""
    t0, before = time.perf_counter(), learner.env_steps
    metrics = learner.advance(max(0, min(chunk * cfg.chunk_steps, cfg.steps) - before))
    took = time.perf_counter() - t0
    metrics.update({"time/chunk_s": took, "time/env_step_s": took / max(1, learner.env_steps - before)})
    metrics.update(exact_metrics(learner.q, learner.counts.sum(0), task, cfg))
    if cfg.eval.episodes and ((cfg.eval.every and chunk % cfg.eval.every == 0) or chunk == cfg.chunks):
        metrics.update({f"eval/{k}": v for k, v in evaluate_table(learner.q, task, cfg, cfg.eval.episodes).items()})
    return metrics


# ---------------------------------------------------------------------------------------------- evaluate

def load_table(model: str) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(q, counts, source) of a run folder (its ``q_table.safetensors``, else its newest checkpoint) or of a
    checkpoint folder (its pickled learner)."""
    path = Path(model)
    if (path / Q_TABLE).is_file():
        tensors = load_safetensors((path / Q_TABLE).read_bytes())
        return tensors["q"], tensors.get("counts"), str(path / Q_TABLE)
    checkpoints = list_checkpoints(path) if path.is_dir() else []
    folder = checkpoints[-1] if checkpoints else path
    if not (folder / "learner.pkl").is_file():
        raise ConfigError(f"model = {model!r}: neither a tabular run folder (no {Q_TABLE}, no checkpoints) nor a "
                          f"checkpoint of one (no learner.pkl); pass the run folder that langrl train wrote")
    learner: TabularLearner = load_objects(folder, ["learner"])["learner"]
    return learner.q, learner.counts.sum(0), str(folder)


def evaluate_kind(config: TabularConfig, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: tabular`` (``num_prompts`` does not apply): the table of ``model`` (a run
    folder or checkpoint) on the config's environment over ``episodes`` (default ``eval.episodes``) held-out
    seeds, and its exact errors where the environment has a model."""
    n = episodes if episodes is not None else config.eval.episodes
    if n < 1:
        raise ConfigError(f"eval.episodes = {config.eval.episodes}: evaluating needs at least 1 episode; set "
                          f"eval.episodes in the config or pass --episodes N")
    q, counts, source = load_table(model)
    task = build_task(config)
    probe = task.make()
    shape = (int(probe.observation_space.n), int(probe.action_space.n))  # type: ignore[attr-defined]
    if tuple(q.shape) != shape:
        raise ConfigError(f"model = {model!r}: its table has shape {tuple(q.shape)}, env {config.env.id} needs "
                          f"{shape} (states, actions); evaluate with the config it was trained with")
    t0 = time.perf_counter()
    result: dict[str, Any] = {"model": model, "source": source, "env": config.env.id,
                              **evaluate_table(q, task, config, n)}
    result.update({"episodes": n, "seeds": [config.eval.seed_start, config.eval.seed_start + n - 1],
                   "greedy": config.eval.greedy, "time_s": time.perf_counter() - t0})
    if counts is not None:
        result.update(exact_metrics(q, counts, task, config))
    return result
