"""Imitation learning for the action-scoring LM policy: behaviour cloning from demonstrations.

Demonstrations come from minigrid's `BabyAIBot` expert (`langrl.agents.episodes.bot_episodes`) or from an
LM that proposes actions, a larger one or the same one prompted differently, keeping only the episodes
it solved (:func:`lm_demonstrations`; "filtered behaviour cloning"). Cloning minimises the cross-entropy
of the demonstrated action under the policy's softmax over the admissible action strings (GLAM's policy,
Carta et al. 2023; Pomerleau 1991 for behaviour cloning).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import gymnasium as gym
import torch
import torch.nn.functional as F

from langrl.agents.lm_policy import LMPolicy
from langrl.envs.text.history import render_history
from langrl.rollout.episodes import Episode, run_episodes
from langrl.run.optim import minibatch_epochs, trainable


def demo_views(episodes: Sequence[Episode], actions: Sequence[str],
               window: int) -> tuple[list[str], list[int]]:
    """Every step of the episodes as (view, demonstrated action): the view is what the policy would see
    there, the last ``window`` (observation, action) pairs of its episode and the observation."""
    views, targets = [], []
    for episode in episodes:
        past: deque[tuple[str, str]] = deque(maxlen=window)
        for obs, action in zip(episode.observations, episode.actions, strict=True):
            views.append(render_history(list(past), obs))
            targets.append(action)
            if window:
                past.append((obs, actions[action]))
    return views, targets


def bc_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning: mean over B of -log softmax(logits)[target], (B, A) x (B,) -> scalar."""
    return F.cross_entropy(logits.float(), targets)


def behaviour_cloning(policy: LMPolicy, views: Sequence[str], targets: Sequence[int],
                      optimizer: torch.optim.Optimizer, epochs: int, batch_size: int,
                      generator: torch.Generator, max_grad_norm: float = 1.0) -> list[float]:
    """``epochs`` passes over shuffled minibatches of (view, action), one optimizer step each; returns
    each epoch's mean loss."""
    prompts = policy.prompt_ids(views)
    labels = torch.tensor(list(targets), device=policy.model.device)

    def loss(rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits, _ = policy([prompts[i] for i in rows.tolist()])
        value = bc_loss(logits, labels[rows.to(labels.device)])
        return value, {"bc/loss": float(value.detach())}

    policy.train()
    epoch_losses = [minibatch_epochs(len(prompts), batch_size, 1, loss, optimizer, trainable(policy), max_grad_norm,
                                     generator=generator)["bc/loss"] for _ in range(epochs)]
    policy.eval()
    return epoch_losses


@torch.no_grad()
def bc_eval_loss(policy: LMPolicy, views: Sequence[str], targets: Sequence[int],
                 batch_size: int = 16) -> float:
    """Mean behaviour-cloning loss over (view, action) pairs, without gradients."""
    total = 0.0
    for start in range(0, len(views), batch_size):
        logits, _ = policy(policy.prompt_ids(views[start:start + batch_size]))
        labels = torch.tensor(list(targets[start:start + batch_size]), device=logits.device)
        total += float(bc_loss(logits, labels)) * len(labels)
    return total / max(1, len(views))


def lm_demonstrations(proposer: LMPolicy, make: Callable[[], gym.Env], seeds: Sequence[int], greedy: bool,
                      generator: torch.Generator | None = None, parallel: int = 8) -> list[Episode]:
    """Episodes in which the ``proposer`` LM chose the actions (greedy or sampled), keeping the successes.

    The proposer is any action-scoring policy: a larger LM, or the policy's own LM with another template
    (instructions, worked examples). Its window is the proposer's own.
    """
    episodes = run_episodes(proposer.chooser(greedy, generator), make, seeds, proposer.actions,
                            proposer.window, parallel)
    return [e for e in episodes if e.success]
