"""Rollouts over environment steps: N vectorised text environments, n_steps actions each, with a choice
policy that records what its update needs (log-probs, values, the reference's scores), so that learning
needs no extra pass for old quantities.

A pure function of (policy snapshot, environment state, generator): the environments live in a
:class:`VecState` that a checkpoint saves, so a run resumed mid-episode continues them exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from langrl.envs.text.history import EpisodeWindow, render_history
from langrl.protocols import ChoicePolicy
from langrl.rl.kl import kl_exact

ReferenceScorer = Callable[[Sequence[Sequence[int]]], torch.Tensor]  # prompts (B,) -> logits (B, A)


@dataclass
class StepRollout:
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
def collect_steps(policy: ChoicePolicy, state: VecState, n_steps: int, gamma: float, generator: torch.Generator,
                  reference: ReferenceScorer | None = None, kl_reward_coef: float = 0.0) -> StepRollout:
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
    return StepRollout(prompts=prompts, actions=stacked["actions"], logprobs=stacked["logprobs"],
                   values=stacked["values"], rewards=stacked["rewards"], dones=stacked["dones"],
                   last_values=last_values.cpu(), ref_logits=stacked.get("ref"), kl=stacked.get("kl"),
                   finished=finished)


def final_values(policy: ChoicePolicy, state: VecState, rows: np.ndarray, final_obs: Sequence[str],
                 names: Sequence[str]) -> torch.Tensor:
    """V of the last observation of the truncated episodes ``rows`` (before their windows are cleared)."""
    views = []
    for i in rows:
        past = [*state.window.past[i], (state.observations[i], names[i])]
        views.append(render_history(past[len(past) - policy.window:] if policy.window else [], final_obs[i]))
    return policy(policy.prompt_ids(views))[1]
