"""The GLAM recipe (Carta et al. 2023): an action-scoring LM policy trained online with PPO over
environment steps in Gymnasium vector environments, optionally bootstrapped by behaviour cloning.

    config -> LM (+ LoRA) -> LMPolicy -> [zero-shot eval] -> [demonstrations -> cloning -> eval]
           -> repeat: rollout of n_steps x N env steps -> GAE over env steps -> PPO epochs -> harness
           -> eval on held-out seeds -> report

Each environment step is one action: the policy scores the A action strings after each of the N
environments' prompts in one batched pass (`score_actions`), samples an action, and records its
log-prob and the value head's estimate (`langrl.rollout.env_steps`), so the update needs no extra pass
for old log-probs or values. The maths are langrl's shared pure functions: `langrl.rl.returns.gae` with
per-step discounts, `langrl.rl.ppo.ppo_loss` (each state a one-step sequence), `kl_exact` (the KL to the
initial LM over the A actions, exactly). The run folder, checkpoints (the environments included, so a
resumed run continues their episodes) and logging are `langrl.run.harness`'s.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import torch
from transformers import PreTrainedModel

from langrl.agents.env_collect import AgentRun, LocalEnvCollector, RayEnvCollector
from langrl.agents.episodes import bot_episodes
from langrl.agents.imitation import bc_eval_loss, behaviour_cloning, demo_views, lm_demonstrations
from langrl.agents.lm_policy import LMPolicy
from langrl.agents.scoring import score_actions
from langrl.config.agent import AgentConfig, PPOSection, load_agent_config
from langrl.envs.text.core import action_names, make_env
from langrl.errors import ConfigError, NonFiniteError
from langrl.models import LM, Reference, apply_lora, load_lm
from langrl.report.agent import summarise_agent, write_agent_report
from langrl.rl.kl import kl_exact
from langrl.rl.ppo import ppo_loss
from langrl.rl.returns import gae, whiten
from langrl.rollout.env_steps import ReferenceScorer, StepRollout
from langrl.rollout.episodes import Episode, run_episodes, summarise_episodes
from langrl.run import seeds
from langrl.run.callbacks import Callback
from langrl.run.checkpoint import newest_checkpoint
from langrl.run.harness import Checkpointed, RunHarness, TrainResult, resolve_run_dir, run_name
from langrl.run.logger import RunLogger
from langrl.run.optim import build_optimizer, freeze, minibatch_epochs, set_lr, trainable

log = logging.getLogger("langrl")

# ---------------------------------------------------------------------------------------------- update

def choice_loss(policy: LMPolicy, prompts: list[list[int]], flat: dict[str, torch.Tensor], ppo: PPOSection,
                ref_logits: torch.Tensor | None, kl_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO over action choices: the shared `ppo_loss` with each state a one-step sequence (T = 1),
    the entropy over the A actions, and beta KL(pi || ref) over them in ``kl.mode: loss``."""
    logits, values = policy(prompts)
    logp_all = logits.float().log_softmax(-1)
    logp = logp_all.gather(-1, flat["actions"][:, None])  # (B, 1)
    entropy = -(logp_all.exp() * logp_all).sum(-1, keepdim=True)
    loss, parts = ppo_loss(logp, flat["logprobs"][:, None], flat["advantages"], values[:, None],
                           flat["values"][:, None], flat["returns"][:, None], torch.ones_like(logp), ppo.clip_eps,
                           ppo.value_clip, ppo.value_coef, entropy, ppo.entropy_coef)
    if ref_logits is not None and kl_coef > 0:
        kl = kl_exact(logits[:, None], ref_logits[:, None]).mean()
        loss = loss + kl_coef * kl
        parts["loss/kl"] = float(kl.detach())
    return loss, parts


def step_targets(rollout: StepRollout, ppo: PPOSection) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over each environment's steps, (T, N) -> advantages, returns (T, N): the discount is gamma
    until an episode ends (``dones``) and the last state's value bootstraps the rollout's end."""
    discounts = ppo.gamma * (1.0 - rollout.dones.T)
    advantages, returns = gae(rollout.rewards.T, rollout.values.T, discounts, ppo.lam,
                              bootstrap=rollout.last_values)
    return advantages.T, returns.T


def ppo_update(policy: LMPolicy, optimizer: torch.optim.Optimizer, rollout: StepRollout, ppo: PPOSection,
               generator: torch.Generator, kl_coef: float = 0.0,
               max_grad_norm: float = 1.0) -> dict[str, float]:
    """GAE over the rollout's environment steps, then ``ppo.epochs`` passes over shuffled minibatches of
    ``ppo.minibatch_size`` states, one optimizer step each. Returns the mean of each loss part."""
    advantages, returns = step_targets(rollout, ppo)
    device = policy.model.device
    flat = {k: v.reshape(-1).to(device) for k, v in (("advantages", advantages), ("returns", returns),
            ("actions", rollout.actions), ("logprobs", rollout.logprobs), ("values", rollout.values))}
    if ppo.whiten_advantages and flat["advantages"].numel() > 1:
        flat["advantages"] = whiten(flat["advantages"], torch.ones_like(flat["advantages"]))
    ref = None
    if rollout.ref_logits is not None:
        ref = rollout.ref_logits.reshape(len(rollout.prompts), -1).to(device)

    def loss(rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        picked = {k: v[rows.to(device)] for k, v in flat.items()}
        return choice_loss(policy, [rollout.prompts[i] for i in rows.tolist()], picked, ppo,
                           None if ref is None else ref[rows.to(device)], kl_coef)

    policy.train()
    metrics = minibatch_epochs(len(rollout.prompts), ppo.minibatch_size, ppo.epochs, loss, optimizer,
                               trainable(policy), max_grad_norm, generator=generator)
    policy.eval()
    metrics["value/mean"] = float(rollout.values.mean())
    metrics["return/target_mean"] = float(returns.mean())
    return metrics


# ---------------------------------------------------------------------------------------------- building

def build_policy(cfg: AgentConfig, lm: LM, actions: Sequence[str]) -> LMPolicy:
    """The action-scoring policy of ``cfg.policy`` on ``lm`` (already LoRA-wrapped when wanted)."""
    p = cfg.policy
    return LMPolicy(lm, actions, window=p.window, template=p.template, chat=p.chat, sep=p.sep)


def evaluate_policy(policy: LMPolicy, make: Callable[[], gym.Env], cfg: AgentConfig,
                    episodes: int | None = None) -> dict[str, float]:
    """Success rate, mean return and length over ``eval.episodes`` held-out seeds (one episode each)."""
    n = cfg.eval.episodes if episodes is None else episodes
    held_out = range(cfg.eval.seed_start, cfg.eval.seed_start + n)
    generator = seeds.generator(cfg.seed, "agent_eval")
    played = run_episodes(policy.chooser(cfg.eval.greedy, generator), make, held_out, policy.actions,
                          policy.window, cfg.eval.parallel)
    return summarise_episodes(played)


def demonstrations(cfg: AgentConfig, policy: LMPolicy, make: Callable[[], gym.Env]) -> list[Episode]:
    """Successful demonstration episodes from the configured source (the bot or an LM proposer)."""
    im = cfg.imitation
    demo_seeds = range(im.seed_start, im.seed_start + im.episodes)
    if im.source == "bot":
        return bot_episodes(make, demo_seeds)
    proposer = policy
    if im.proposer is not None or im.proposer_template is not None:
        lm = load_lm(im.proposer or cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
        template = im.proposer_template or cfg.policy.template
        proposer = LMPolicy(lm, policy.actions, policy.window, template, cfg.policy.chat, cfg.policy.sep)
    generator = seeds.generator(cfg.seed, "demos")
    return lm_demonstrations(proposer, make, demo_seeds, im.proposer_greedy, generator, cfg.eval.parallel)


def reference_scorer(policy: LMPolicy, reference: Reference) -> ReferenceScorer:
    """Scores (B, A) of the initial LM over the actions (`Reference.model`: a frozen copy, or the policy
    with its LoRA adapter switched off)."""

    @torch.no_grad()
    def scores(prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        with reference.model(policy.model) as model:
            return score_actions(model, prompts, policy.prior.action_ids, policy.pad_id).scores

    return scores


# ---------------------------------------------------------------------------------------------- train

def train_agent(config: AgentConfig | dict[str, Any] | str | Path, output: str | Path | None = None,
                resume: bool = False, overrides: list[str] | tuple[str, ...] = (),
                allow_config_change: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train an LM agent as ``config`` (``kind: agent``) says: zero-shot evaluation, cloning, PPO,
    evaluation, report. ``callbacks`` see every PPO update (`langrl.run.callbacks`).

    The run folder holds ``config.yaml``, ``metrics.jsonl`` (one row per PPO update with ``env/steps``;
    rows at step 0 for the prior, the demonstrations and cloning), checkpoints (with the environments'
    state) and the report. A resumed run logs what the uninterrupted run logs.
    """
    cfg = load_agent_config(config, overrides)
    run_dir = resolve_run_dir(run_name(config, "agent"), output, resume)
    run = build_agent(cfg)
    policy = run.policy
    optimizer = build_optimizer(trainable(policy), cfg.optim)
    with closing(build_env_collector(run)) as collector:
        parts = Checkpointed(policy.model, policy.tokenizer, optimizer, {"value_head": policy.head},
                             {"envs": collector.env_state()})
        with RunHarness(run_dir, cfg, cfg.log, parts, allow_config_change, callbacks) as harness:
            state = harness.restore() if resume else {}
            collector.load_env_state(parts.objects["envs"])
            with harness.session(total=cfg.updates, desc="ppo") as logger:
                if not state:
                    start_phase(cfg, policy, run.make, logger)
                    harness.checkpoint(0, {"env_steps": 0, "elapsed_s": 0.0, "phase": "start"})
                last = ppo_phase(run, optimizer, collector, logger, harness, state)
    write_agent_report(run_dir)
    return TrainResult(run_dir=run_dir, metrics=last, summary=summarise_agent(run_dir))


def build_agent(cfg: AgentConfig) -> AgentRun:
    """The environments' factory, the LM policy (LoRA-wrapped and frozen as configured) and the reference."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    make = functools.partial(make_env, cfg.env.id, cfg.env.kwargs, cfg.env.max_episode_steps)
    actions = action_names(make(), cfg.seed)
    lm = load_lm(cfg.model, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed)
    use_adapter = cfg.lora is not None and cfg.kl.reference != "copy"
    reference = Reference(lm.model, use_adapter=use_adapter) if cfg.kl.coef > 0 else None
    if cfg.lora is not None:
        peft = apply_lora(lm.model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
        lm = LM(cast(PreTrainedModel, peft), lm.tokenizer, lm.name)  # a PeftModel forwards as the model
    freeze(lm.model, cfg.policy.freeze, "policy.freeze")
    policy = build_policy(cfg, lm, actions).eval()
    scorer = reference_scorer(policy, reference) if reference is not None else None
    return AgentRun(config=cfg, make=make, policy=policy, reference=reference, scorer=scorer)


def build_env_collector(run: AgentRun) -> LocalEnvCollector | RayEnvCollector:
    """Where the rollouts are collected: Ray rollout workers, or the learner's own process."""
    dist = run.config.distributed
    if dist.remote:
        return RayEnvCollector(run, dist, builder="langrl.agents.lm_agent:build_agent")
    return LocalEnvCollector(run, dist.shard_count)


def start_phase(cfg: AgentConfig, policy: LMPolicy, make: Callable[[], gym.Env], logger: RunLogger) -> None:
    """Step 0: the zero-shot prior's evaluation, then (optionally) cloning and its evaluation."""
    if cfg.eval.prior and cfg.eval.episodes:
        logger.log_metrics(0, {"env/steps": 0, **prefixed("prior", evaluate_policy(policy, make, cfg))})
    if cfg.imitation.source != "none":
        logger.log_metrics(0, imitate(cfg, policy, make, logger))
        if cfg.eval.episodes:
            logger.log_metrics(0, {"env/steps": 0, **prefixed("cloned", evaluate_policy(policy, make, cfg))})


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
    generator = seeds.generator(cfg.seed, "cloning")
    im = cfg.imitation
    losses = behaviour_cloning(policy, views, targets, optimizer, im.epochs, im.batch_size, generator,
                               cfg.optim.max_grad_norm)
    t2 = time.perf_counter()
    for epoch, loss in enumerate(losses, start=1):
        logger.log_metrics(0, {"bc/epoch": epoch, "bc/loss": loss})
    return {"bc/demos": len(episodes), "bc/samples": len(views), "bc/loss_before": before, "bc/loss_after":
            bc_eval_loss(policy, views, targets), "time/demos_s": t1 - t0, "time/bc_s": t2 - t1,
            "time/bc_per_sample_s": (t2 - t1) / (len(views) * cfg.imitation.epochs)}


def ppo_phase(run: AgentRun, optimizer: torch.optim.Optimizer, collector: LocalEnvCollector | RayEnvCollector,
              logger: RunLogger, harness: RunHarness, state: dict[str, Any]) -> dict[str, float]:
    """PPO updates ``harness.start + 1 .. cfg.updates``; returns the last update's metrics."""
    cfg, policy = run.config, run.policy
    ppo, updates = cfg.ppo, cfg.updates
    loss_coef = cfg.kl.coef if cfg.kl.mode == "loss" else 0.0
    env_steps = int(state.get("env_steps", 0))
    clock = time.perf_counter() - float(state.get("elapsed_s", 0.0))
    last: dict[str, float] = {}
    for update in harness.steps(updates):
        set_lr(optimizer, cfg.optim, update, updates)
        generator = seeds.generator(cfg.seed, "agent_step", update)
        t0 = time.perf_counter()
        rollout, sync_s = collector.collect(update, update - 1, generator)
        t1 = time.perf_counter()
        try:
            metrics = ppo_update(policy, optimizer, rollout, ppo, generator, loss_coef, cfg.optim.max_grad_norm)
        except NonFiniteError as e:
            raise NonFiniteError(f"update {update}: {e}; nothing of this update was logged or checkpointed (the "
                                 f"last checkpoint is intact): lower optim.lr") from None
        t2 = time.perf_counter()
        env_steps += rollout.actions.numel()
        last = {"env/steps": env_steps, **rollout_metrics(rollout), **metrics,
                "lr": optimizer.param_groups[0]["lr"],
                "time/rollout_s": t1 - t0, "time/sync_s": sync_s, "time/update_s": t2 - t1,
                "time/env_step_s": (t1 - t0) / rollout.actions.numel(), "time/elapsed_s": t2 - clock}
        if cfg.eval.episodes and ((cfg.eval.every and update % cfg.eval.every == 0) or update == updates):
            last.update(prefixed("eval", evaluate_policy(policy, run.make, cfg)))
        harness.log(logger, update, last)
        if harness.due(update, updates):
            harness.parts.objects["envs"] = collector.env_state()
            harness.checkpoint(update, {"env_steps": env_steps, "elapsed_s": time.perf_counter() - clock,
                                        "phase": "ppo"})
        harness.advance(success=last.get("rollout/success_rate", float("nan")),
                        ret=last.get("rollout/return", float("nan")))
    return last


def rollout_metrics(rollout: StepRollout) -> dict[str, float]:
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


# ---------------------------------------------------------------------------------------------- evaluation

def resolve_policy_path(model: str) -> str:
    """A run folder -> its newest checkpoint; anything else (checkpoint, model name) as it is."""
    return newest_checkpoint(model)


def trained_config(path: str, cfg: AgentConfig) -> AgentConfig:
    """The config the checkpoint at ``path`` was trained with (its run's ``config.yaml``) with ``cfg``'s
    ``eval`` section: a policy is evaluated seeing what it saw in training (window, template,
    environment). Anything else (a model name) keeps ``cfg``."""
    run_dir = Path(path).parent.parent  # checkpoints/step-N inside a run folder
    saved = run_dir / "config.yaml"
    if not (Path(path).is_dir() and saved.is_file()):
        return cfg
    trained = load_agent_config(saved)
    differs = [name for name in ("env", "policy") if getattr(trained, name) != getattr(cfg, name)]
    if differs:
        log.warning("evaluating with the %s section(s) the run was trained with (%s), not the given config's",
                    " and ".join(differs), saved)
    return trained.model_copy(update={"eval": cfg.eval})


def evaluate_kind(config: AgentConfig, model: str, num_prompts: int, episodes: int | None) -> dict[str, Any]:
    """`langrl.evaluate` of ``kind: agent`` (``num_prompts`` does not apply)."""
    if episodes is None and config.eval.episodes < 1:
        raise ConfigError(f"eval.episodes = {config.eval.episodes}: evaluating needs at least 1 episode; "
                          f"set eval.episodes in the config or pass --episodes N")
    return evaluate_agent(config, model, episodes)


def evaluate_agent(config: AgentConfig | dict[str, Any] | str | Path, model: str, episodes: int | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Success rate and mean return of ``model`` (a run folder, checkpoint or model name) as the policy of
    the config's environment, over ``episodes`` (default ``eval.episodes``) held-out seeds."""
    path = resolve_policy_path(model)
    cfg = trained_config(path, load_agent_config(config, overrides))
    make = functools.partial(make_env, cfg.env.id, cfg.env.kwargs, cfg.env.max_episode_steps)
    policy = build_policy(cfg, load_lm(path, dtype=cfg.dtype, device=cfg.device, seed=cfg.seed),
                          action_names(make(), cfg.seed)).eval()
    t0 = time.perf_counter()
    result = evaluate_policy(policy, make, cfg, episodes)
    n = int(result["episodes"])
    return {"model": model, "checkpoint": path, "env": cfg.env.id, **result,
            "seeds": [cfg.eval.seed_start, cfg.eval.seed_start + n - 1], "greedy": cfg.eval.greedy,
            "time_s": time.perf_counter() - t0}
