"""The GLAM recipe (Carta et al. 2023): an action-scoring LM policy trained online with PPO over
environment steps in Gymnasium vector environments, optionally bootstrapped by behaviour cloning.

    config -> LM (+ LoRA) -> LMPolicy -> [zero-shot eval] -> [demonstrations -> cloning -> eval]
           -> repeat: rollout of n_steps x N env steps -> GAE over env steps -> PPO epochs -> log/checkpoint
           -> eval on held-out seeds -> report

Each environment step is one action: the policy scores the A action strings after each of the N
environments' prompts in one batched pass (`score_actions`), samples an action, and records its
log-prob and the value head's estimate, so the update needs no extra pass for old log-probs or values.
The losses are langrl's pure functions: `gae_env_steps`, `clipped_surrogate`, `clipped_value_loss`,
`kl_exact` (the KL to the initial LM over the A actions, exactly).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from langrl.agents.config import AgentConfig, PPOSection, load_agent_config
from langrl.agents.episodes import (
    Episode,
    action_names,
    bot_episodes,
    make_env,
    run_episodes,
    summarise_episodes,
)
from langrl.agents.imitation import bc_eval_loss, behaviour_cloning, demo_views, lm_demonstrations
from langrl.agents.lm_policy import EpisodeWindow, LMPolicy, render_history
from langrl.agents.scoring import score_actions
from langrl.algorithms.base import clip_gradients, mean_metrics
from langrl.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from langrl.config import config_to_yaml
from langrl.eval import RunLogger
from langrl.io import atomic_write_text
from langrl.losses.gae import gae_env_steps, whiten
from langrl.losses.kl import kl_exact
from langrl.losses.policy import clipped_surrogate
from langrl.losses.value import clipped_value_loss
from langrl.models import LM, Reference, apply_lora, load_lm
from langrl.trainer import TrainResult, freeze, lr_factor, resolve_run_dir

ReferenceScorer = Callable[[Sequence[Sequence[int]]], torch.Tensor]  # prompts (B,) -> logits (B, A)


# ---------------------------------------------------------------------------------------------- rollout

@dataclass
class Rollout:
    """T = n_steps steps of N environments. Row ``t * N + n`` of ``prompts`` is environment n at step t;
    tensors are (T, N) unless noted. ``rewards`` hold the environment's reward, plus gamma V(final
    observation) at a truncation, minus beta KL in ``kl.mode: reward``."""

    prompts: list[list[int]]
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    last_values: torch.Tensor  # (N,): V of the states the next rollout starts from
    ref_logits: torch.Tensor | None = None  # (T, N, A): the reference's scores, when there is one
    kl: torch.Tensor | None = None  # (T, N): exact KL(pi || pi_ref) over the actions at each state
    finished: list[tuple[float, bool, int]] = field(default_factory=list)  # (return, success, length)


@dataclass
class VecState:
    """The vector environment between rollouts: current observations, prompt windows, episode tallies."""

    envs: gym.vector.SyncVectorEnv
    observations: list[str]
    window: EpisodeWindow
    returns: np.ndarray
    lengths: np.ndarray


def start_envs(make: Callable[[], gym.Env], n_envs: int, window: int, seed: int) -> VecState:
    """N environments that reset themselves in the step that ends an episode (SAME_STEP autoreset, so
    the returned observation is the next episode's first and ``info["final_obs"]`` the last one)."""
    envs = gym.vector.SyncVectorEnv([make] * n_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    observations, _ = envs.reset(seed=seed)
    return VecState(envs=envs, observations=list(observations), window=EpisodeWindow(n_envs, window),
                    returns=np.zeros(n_envs), lengths=np.zeros(n_envs, dtype=int))


@torch.no_grad()
def collect_rollout(policy: LMPolicy, state: VecState, n_steps: int, gamma: float, generator: torch.Generator,
                    reference: ReferenceScorer | None = None, kl_reward_coef: float = 0.0) -> Rollout:
    """Act ``n_steps`` times in every environment with the policy's samples; record what PPO needs."""
    prompts: list[list[int]] = []
    columns: dict[str, list[torch.Tensor]] = {k: [] for k in ("actions", "logprobs", "values", "rewards",
                                                              "dones", "ref", "kl")}
    finished = []
    for _ in range(n_steps):
        step_prompts = policy.prompt_ids(state.window.texts(state.observations))
        decision = policy.act(step_prompts, generator)
        chosen = decision.actions.tolist()
        names = [policy.actions[a] for a in chosen]
        observations, reward, terminated, truncated, info = state.envs.step(np.array(chosen))
        rewards = torch.tensor(reward, dtype=torch.float32)
        if reference is not None:
            ref = reference(step_prompts).float()
            kl = kl_exact(decision.logits[:, None], ref[:, None]).squeeze(1).cpu()
            columns["ref"].append(ref.cpu())
            columns["kl"].append(kl)
            rewards = rewards - kl_reward_coef * kl
        cut = np.flatnonzero(truncated & ~terminated)
        if len(cut):  # the episode did not end: bootstrap its last reward with the final state's value
            rewards[cut] += gamma * final_values(policy, state, cut, info["final_obs"], names).cpu()
        done = terminated | truncated
        state.returns += reward
        state.lengths += 1
        for i in np.flatnonzero(done):
            success = bool(terminated[i] and reward[i] > 0)
            finished.append((float(state.returns[i]), success, int(state.lengths[i])))
            state.returns[i], state.lengths[i] = 0.0, 0
        state.window.push(state.observations, names, done.tolist())
        state.observations = list(observations)
        prompts += step_prompts
        for key, value in (("actions", decision.actions.cpu()), ("logprobs", decision.logprobs.cpu()),
                           ("values", decision.values.cpu()), ("rewards", rewards),
                           ("dones", torch.tensor(done, dtype=torch.float32))):
            columns[key].append(value)
    _, last_values = policy(policy.prompt_ids(state.window.texts(state.observations)))
    stacked = {k: torch.stack(v) for k, v in columns.items() if v}
    return Rollout(prompts=prompts, actions=stacked["actions"], logprobs=stacked["logprobs"],
                   values=stacked["values"], rewards=stacked["rewards"], dones=stacked["dones"],
                   last_values=last_values.cpu(), ref_logits=stacked.get("ref"), kl=stacked.get("kl"),
                   finished=finished)


def final_values(policy: LMPolicy, state: VecState, rows: np.ndarray, final_obs: Sequence[str],
                 names: Sequence[str]) -> torch.Tensor:
    """V of the last observation of the truncated episodes ``rows`` (before their windows are cleared)."""
    views = []
    for i in rows:
        past = [*state.window.past[i], (state.observations[i], names[i])]
        views.append(render_history(past[len(past) - policy.window:] if policy.window else [], final_obs[i]))
    return policy(policy.prompt_ids(views))[1]


# ---------------------------------------------------------------------------------------------- update

def ppo_loss(logits: torch.Tensor, values: torch.Tensor, actions: torch.Tensor, old_logprobs: torch.Tensor,
             advantages: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, ppo: PPOSection,
             ref_logits: torch.Tensor | None = None, kl_coef: float = 0.0,
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO over action choices, (B, A) logits and (B,) everything else -> scalar loss and its parts.

        loss = clipped surrogate + value_coef * 0.5 (V - R)^2 - entropy_coef * H(pi) [+ beta KL(pi || ref)]

    Each state is a one-token "sequence", so the per-token pure losses apply with T = 1.
    """
    logp_all = logits.float().log_softmax(-1)
    logp = logp_all.gather(-1, actions[:, None])  # (B, 1)
    policy_loss = clipped_surrogate(logp, old_logprobs[:, None], advantages, ppo.clip_eps).mean()
    ones = torch.ones_like(logp)
    value_loss = clipped_value_loss(values[:, None], old_values[:, None], returns[:, None], ones,
                                    ppo.value_clip)
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    loss = policy_loss + ppo.value_coef * value_loss - ppo.entropy_coef * entropy
    ratio = torch.exp(logp.detach().squeeze(1) - old_logprobs)
    parts = {"loss/policy": float(policy_loss.detach()), "loss/value": float(value_loss.detach()),
             "entropy": float(entropy.detach()),
             "clip/fraction": float(((ratio - 1).abs() > ppo.clip_eps).float().mean()),
             "kl/old": float((old_logprobs - logp.detach().squeeze(1)).mean())}
    if ref_logits is not None and kl_coef > 0:
        kl = kl_exact(logits[:, None], ref_logits[:, None]).mean()
        loss = loss + kl_coef * kl
        parts["loss/kl"] = float(kl.detach())
    return loss, parts


def ppo_update(policy: LMPolicy, optimizer: torch.optim.Optimizer, rollout: Rollout, ppo: PPOSection,
               generator: torch.Generator, kl_coef: float = 0.0,
               max_grad_norm: float = 1.0) -> dict[str, float]:
    """GAE over the rollout's environment steps, then ``ppo.epochs`` passes over shuffled minibatches of
    ``ppo.minibatch_size`` states, one optimizer step each. Returns the mean of each loss part."""
    advantages, returns = gae_env_steps(rollout.rewards, rollout.values, rollout.dones, rollout.last_values,
                                        ppo.gamma, ppo.lam)
    device = policy.model.device
    flat = {k: v.reshape(-1).to(device) for k, v in (("advantages", advantages), ("returns", returns),
            ("actions", rollout.actions), ("logprobs", rollout.logprobs), ("values", rollout.values))}
    if ppo.whiten_advantages and flat["advantages"].numel() > 1:
        flat["advantages"] = whiten(flat["advantages"], torch.ones_like(flat["advantages"]))
    ref = None
    if rollout.ref_logits is not None:
        ref = rollout.ref_logits.reshape(len(rollout.prompts), -1).to(device)
    params = [p for p in policy.parameters() if p.requires_grad]
    stats: dict[str, list[float]] = {}
    policy.train()
    for _ in range(ppo.epochs):
        for rows in torch.randperm(len(rollout.prompts), generator=generator).split(ppo.minibatch_size):
            logits, values = policy([rollout.prompts[i] for i in rows.tolist()])
            rows = rows.to(device)
            loss, parts = ppo_loss(logits, values, flat["actions"][rows], flat["logprobs"][rows],
                                   flat["advantages"][rows], flat["values"][rows], flat["returns"][rows], ppo,
                                   None if ref is None else ref[rows], kl_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            parts["grad/norm"] = clip_gradients(params, max_grad_norm)
            optimizer.step()
            for key, value in parts.items():
                stats.setdefault(key, []).append(value)
    policy.eval()
    metrics = mean_metrics(stats)
    metrics["value/mean"] = float(rollout.values.mean())
    metrics["return/target_mean"] = float(returns.mean())
    return metrics


# ---------------------------------------------------------------------------------------------- building

def build_policy(cfg: AgentConfig, lm: LM, actions: Sequence[str]) -> LMPolicy:
    """The action-scoring policy of ``cfg.policy`` on ``lm`` (already LoRA-wrapped when wanted)."""
    p = cfg.policy
    return LMPolicy(lm, actions, window=p.window, template=p.template, chat=p.chat, sep=p.sep)


def reference_scorer(policy: LMPolicy, reference: Reference) -> ReferenceScorer:
    """Scores (B, A) of the initial LM: a frozen copy, or the policy with its LoRA adapter switched off."""

    @torch.no_grad()
    def scores(prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        model = reference.frozen if reference.frozen is not None else policy.model
        off = policy.model.disable_adapter() if reference.use_adapter else nullcontext()
        with off:
            return score_actions(model, prompts, policy.prior.action_ids, policy.pad_id).scores

    return scores


def evaluate_policy(policy: LMPolicy, make: Callable[[], gym.Env], cfg: AgentConfig,
                    episodes: int | None = None) -> dict[str, float]:
    """Success rate, mean return and length over ``eval.episodes`` held-out seeds (one episode each)."""
    n = cfg.eval.episodes if episodes is None else episodes
    seeds = range(cfg.eval.seed_start, cfg.eval.seed_start + n)
    generator = torch.Generator().manual_seed(cfg.seed + 4242)
    played = run_episodes(policy.chooser(cfg.eval.greedy, generator), make, seeds, policy.actions,
                          policy.window, cfg.eval.parallel)
    return summarise_episodes(played)


def demonstrations(cfg: AgentConfig, policy: LMPolicy, make: Callable[[], gym.Env]) -> list[Episode]:
    """Successful demonstration episodes from the configured source (the bot or an LM proposer)."""
    im = cfg.imitation
    seeds = range(im.seed_start, im.seed_start + im.episodes)
    if im.source == "bot":
        return bot_episodes(make, seeds)
    proposer = policy
    if im.proposer is not None or im.proposer_template is not None:
        lm = load_lm(im.proposer or cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
        template = im.proposer_template or cfg.policy.template
        proposer = LMPolicy(lm, policy.actions, policy.window, template, cfg.policy.chat, cfg.policy.sep)
    generator = torch.Generator().manual_seed(cfg.seed + 99)
    return lm_demonstrations(proposer, make, seeds, im.proposer_greedy, generator, cfg.eval.parallel)


# ---------------------------------------------------------------------------------------------- train

def train_agent(config: AgentConfig | dict[str, Any] | str | Path, output: str | Path | None = None,
                resume: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Train an LM agent as ``config`` says: zero-shot evaluation, cloning, PPO, evaluation, report.

    The run folder holds ``config.yaml``, ``metrics.jsonl`` (one row per PPO update with ``env/steps``;
    rows at step 0 for the prior, the demonstrations and cloning), checkpoints and the report.
    """
    from langrl.agents.report import summarise_agent, write_agent_report

    name = Path(config).stem if isinstance(config, (str, Path)) else "agent"
    cfg = load_agent_config(config, overrides)
    run_dir = resolve_run_dir(name, output, resume)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    make = functools.partial(make_env, cfg.env.id, cfg.env.kwargs, cfg.env.max_episode_steps)
    actions = action_names(make(), cfg.seed)
    lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    use_adapter = cfg.lora is not None and cfg.kl.reference != "copy"
    reference = Reference(lm.model, use_adapter=use_adapter) if cfg.kl.coef > 0 else None
    if cfg.lora is not None:
        lm = LM(apply_lora(lm.model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules),
                lm.tokenizer, lm.name)
    freeze(lm.model, cfg.policy.freeze)
    policy = build_policy(cfg, lm, actions).eval()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    start, env_steps, elapsed = 0, 0, 0.0
    checkpoints = list_checkpoints(run_dir) if resume else []
    if checkpoints:
        state = load_checkpoint(checkpoints[-1], policy.model, optimizer, {"value_head": policy.head})
        start, env_steps, elapsed = int(state["step"]), int(state["env_steps"]), float(state["elapsed_s"])
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))  # type: ignore[arg-type]
    clock = time.perf_counter() - elapsed

    def checkpoint(step: int, steps_done: int, phase: str) -> None:
        save_checkpoint(run_dir, step, policy.model, lm.tokenizer, optimizer,
                        {"env_steps": steps_done, "elapsed_s": time.perf_counter() - clock, "phase": phase},
                        cfg.log.keep_checkpoints, {"value_head": policy.head})

    with RunLogger(run_dir, start_step=start, tensorboard=cfg.log.tensorboard) as logger:
        if not checkpoints:
            if cfg.eval.prior and cfg.eval.episodes:
                prior = evaluate_policy(policy, make, cfg)
                logger.log_metrics(0, {"env/steps": 0, **prefixed("prior", prior)})
            if cfg.imitation.source != "none":
                logger.log_metrics(0, imitate(cfg, policy, make, logger))
                if cfg.eval.episodes:
                    logger.log_metrics(0, {"env/steps": 0,
                                           **prefixed("cloned", evaluate_policy(policy, make, cfg))})
            checkpoint(0, 0, "start")
        last = ppo_phase(cfg, policy, optimizer, reference, make, logger, start, env_steps, clock, checkpoint)
    write_agent_report(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summarise_agent(run_dir))


def prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    """``{"success_rate": x}`` -> ``{"prefix/success_rate": x}``."""
    return {f"{prefix}/{k}": v for k, v in values.items()}


def imitate(cfg: AgentConfig, policy: LMPolicy, make: Callable[[], gym.Env],
            logger: RunLogger) -> dict[str, float]:
    """Collect demonstrations and clone them (a fresh AdamW at ``imitation.lr``); return what to log."""
    t0 = time.perf_counter()
    episodes = demonstrations(cfg, policy, make)
    if not episodes:
        raise RuntimeError(f"imitation.source = {cfg.imitation.source!r} produced no successful episode "
                           f"in {cfg.imitation.episodes} tries; raise imitation.episodes or "
                           f"env.max_episode_steps")
    views, targets = demo_views(episodes, policy.actions, policy.window)
    t1 = time.perf_counter()
    before = bc_eval_loss(policy, views, targets)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.imitation.lr)
    generator = torch.Generator().manual_seed(cfg.seed + 7)
    im = cfg.imitation
    losses = behaviour_cloning(policy, views, targets, optimizer, im.epochs, im.batch_size, generator,
                               cfg.optim.max_grad_norm)
    t2 = time.perf_counter()
    for epoch, loss in enumerate(losses, start=1):
        logger.log_metrics(0, {"bc/epoch": epoch, "bc/loss": loss})
    return {"bc/demos": len(episodes), "bc/samples": len(views), "bc/loss_before": before, "bc/loss_after":
            bc_eval_loss(policy, views, targets), "time/demos_s": t1 - t0, "time/bc_s": t2 - t1,
            "time/bc_per_sample_s": (t2 - t1) / (len(views) * cfg.imitation.epochs)}


def ppo_phase(cfg: AgentConfig, policy: LMPolicy, optimizer: torch.optim.Optimizer,
              reference: Reference | None, make: Callable[[], gym.Env], logger: RunLogger, start: int,
              env_steps: int, clock: float, checkpoint: Callable[[int, int, str], None]) -> dict[str, float]:
    """PPO updates ``start + 1 .. cfg.updates``; returns the last update's metrics."""
    ppo, updates = cfg.ppo, cfg.updates
    scorer = reference_scorer(policy, reference) if reference is not None else None
    reward_coef = cfg.kl.coef if cfg.kl.mode == "reward" else 0.0
    loss_coef = cfg.kl.coef if cfg.kl.mode == "loss" else 0.0
    state = start_envs(make, cfg.env.num_envs, policy.window, cfg.seed + 10_007 * start)
    last: dict[str, float] = {}
    for update in range(start + 1, updates + 1):
        for group in optimizer.param_groups:
            factor = lr_factor(update, updates, cfg.optim.warmup_steps, cfg.optim.schedule)
            group["lr"] = cfg.optim.lr * factor
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + update)
        t0 = time.perf_counter()
        rollout = collect_rollout(policy, state, ppo.n_steps, ppo.gamma, generator, scorer, reward_coef)
        t1 = time.perf_counter()
        metrics = ppo_update(policy, optimizer, rollout, ppo, generator, loss_coef, cfg.optim.max_grad_norm)
        t2 = time.perf_counter()
        env_steps += rollout.actions.numel()
        last = {"env/steps": env_steps, **rollout_metrics(rollout), **metrics,
                "lr": optimizer.param_groups[0]["lr"],
                "time/rollout_s": t1 - t0, "time/update_s": t2 - t1,
                "time/env_step_s": (t1 - t0) / rollout.actions.numel(), "time/elapsed_s": t2 - clock}
        if cfg.eval.episodes and ((cfg.eval.every and update % cfg.eval.every == 0) or update == updates):
            last.update(prefixed("eval", evaluate_policy(policy, make, cfg)))
        logger.log_metrics(update, last)
        if update % cfg.log.checkpoint_every == 0 or update == updates:
            checkpoint(update, env_steps, "ppo")
    state.envs.close()
    return last


def rollout_metrics(rollout: Rollout) -> dict[str, float]:
    """Per-step reward, and success rate / return / length of the episodes that ended in the rollout."""
    out = {"rollout/reward_mean": float(rollout.rewards.mean()), "rollout/episodes": len(rollout.finished)}
    if rollout.kl is not None:
        out["kl/ref"] = float(rollout.kl.mean())
    if rollout.finished:
        returns, successes, lengths = zip(*rollout.finished, strict=True)
        out.update({"rollout/success_rate": sum(successes) / len(successes),
                    "rollout/return": sum(returns) / len(returns),
                    "rollout/length": sum(lengths) / len(lengths)})
    return out


# ---------------------------------------------------------------------------------------------- eval CLI

def resolve_policy_path(model: str) -> str:
    """A run folder -> its newest checkpoint; anything else (checkpoint, model name) as it is."""
    checkpoints = list_checkpoints(Path(model)) if Path(model).is_dir() else []
    return str(checkpoints[-1]) if checkpoints else model


def evaluate_agent(config: AgentConfig | dict[str, Any] | str | Path, model: str, episodes: int | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Success rate and mean return of ``model`` (a run folder, checkpoint or model name) as the policy of
    the config's environment, over ``episodes`` (default ``eval.episodes``) held-out seeds."""
    cfg = load_agent_config(config, overrides)
    make = functools.partial(make_env, cfg.env.id, cfg.env.kwargs, cfg.env.max_episode_steps)
    path = resolve_policy_path(model)
    policy = build_policy(cfg, load_lm(path, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed),
                          action_names(make(), cfg.seed)).eval()
    t0 = time.perf_counter()
    result = evaluate_policy(policy, make, cfg, episodes)
    n = int(result["episodes"])
    return {"model": model, "checkpoint": path, "env": cfg.env.id, **result,
            "seeds": [cfg.eval.seed_start, cfg.eval.seed_start + n - 1], "greedy": cfg.eval.greedy,
            "time_s": time.perf_counter() - t0}
