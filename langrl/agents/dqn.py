"""DQN (Mnih et al. 2015), readable top to bottom: a replay buffer, an online and a target Q-network,
epsilon-greedy acting in vectorised Gymnasium environments, Huber TD loss, gradient clipping, hard or
Polyak target updates, and double DQN (van Hasselt et al. 2016) as an option.

    y    = r + gamma (1 - terminated) max_a' Q_target(s', a')          (double: Q_target(s', argmax Q(s', .)))
    loss = Huber(Q(s, a) - y)

The targets are `langrl.rl.td`'s pure functions. The network is any module mapping a batch of
observations to (B, A) action values: :class:`MLP` on numeric observations by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from langrl.errors import ConfigError
from langrl.rl.td import double_q_target, q_learning_target
from langrl.run.optim import clip_gradients


@dataclass
class DQNSettings:
    """The hyperparameters; the defaults are the RL Zoo's for CartPole-v1."""

    total_steps: int = 50_000
    num_envs: int = 1
    learning_rate: float = 2.3e-3
    buffer_size: int = 100_000
    learning_starts: int = 1_000
    batch_size: int = 64
    gamma: float = 0.99
    train_freq: int = 256            # environment steps between training phases
    gradient_steps: int = 128        # gradient steps per training phase
    target_update_interval: int = 10  # environment steps between target updates, as SB3 counts them
    tau: float = 1.0
    exploration_fraction: float = 0.16
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.04
    max_grad_norm: float = 10.0
    double_q: bool = False
    hidden: tuple[int, ...] = (256, 256)
    seed: int = 0

    def check(self) -> None:
        if self.learning_starts >= self.total_steps:
            raise ConfigError(f"learning_starts = {self.learning_starts} >= total_steps = {self.total_steps}: "
                              f"DQN would never train; lower learning_starts or raise total_steps")
        if self.batch_size > self.buffer_size:
            raise ConfigError(f"batch_size = {self.batch_size} > buffer_size = {self.buffer_size}")


class MLP(nn.Module):
    """Observations (B, D) -> action values (B, A)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...]):
        super().__init__()
        sizes = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


class ReplayBuffer:
    """A ring buffer of (obs, action, reward, next_obs, terminated) transitions."""

    def __init__(self, size: int, obs_shape: tuple[int, ...]):
        self.obs = np.zeros((size, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(size, dtype=np.int64)
        self.rewards = np.zeros(size, dtype=np.float32)
        self.terminated = np.zeros(size, dtype=np.float32)
        self.size, self.full, self.pos = size, False, 0

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray) -> None:
        for i in range(len(actions)):
            p = self.pos
            self.obs[p], self.actions[p], self.rewards[p] = obs[i], actions[i], rewards[i]
            self.next_obs[p], self.terminated[p] = next_obs[i], terminated[i]
            self.pos = (p + 1) % self.size
            self.full = self.full or self.pos == 0

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.size if self.full else self.pos, size=batch)
        return tuple(torch.as_tensor(a[idx]) for a in (self.obs, self.actions, self.rewards, self.next_obs,
                                                       self.terminated))


@dataclass
class DQNResult:
    q_network: nn.Module
    episode_returns: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def epsilon_at(step: int, s: DQNSettings) -> float:
    """Linear decay from the initial to the final epsilon over ``exploration_fraction`` of the steps."""
    progress = min(1.0, step / max(1.0, s.exploration_fraction * s.total_steps))
    return s.exploration_initial_eps + progress * (s.exploration_final_eps - s.exploration_initial_eps)


def train_dqn(make: Callable[[], gym.Env], s: DQNSettings,
              network: Callable[[int, int], nn.Module] | None = None) -> DQNResult:
    """Train DQN for ``s.total_steps`` environment steps (all environments together)."""
    s.check()
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    envs = gym.vector.SyncVectorEnv([make] * s.num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_shape = envs.single_observation_space.shape
    n_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]
    build = network or (lambda d, a: MLP(d, a, s.hidden))
    q = build(int(np.prod(obs_shape or (1,))), n_actions)
    target = build(int(np.prod(obs_shape or (1,))), n_actions)
    target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=s.learning_rate)
    buffer = ReplayBuffer(s.buffer_size, tuple(obs_shape or ()))
    result, running = DQNResult(q_network=q), np.zeros(s.num_envs)
    obs, _ = envs.reset(seed=s.seed)
    for step in range(0, s.total_steps, s.num_envs):
        with torch.no_grad():
            greedy = q(torch.as_tensor(obs)).argmax(-1).numpy()
        explore = rng.random(s.num_envs) < epsilon_at(step, s)
        actions = np.where(explore, rng.integers(0, n_actions, s.num_envs), greedy)
        nxt, reward, terminated, truncated, info = envs.step(actions)
        done = terminated | truncated
        # SAME_STEP autoreset: nxt is the next episode's first observation where one ended
        real_next = nxt.copy()
        for i in np.flatnonzero(done):
            real_next[i] = info["final_obs"][i]
        buffer.add(obs, actions, reward, real_next, terminated)
        running += reward
        for i in np.flatnonzero(done):
            result.episode_returns.append(float(running[i]))
            running[i] = 0.0
        obs = nxt
        calls = step // s.num_envs + 1
        if step >= s.learning_starts and calls % max(1, s.train_freq // s.num_envs) == 0:
            for _ in range(s.gradient_steps):
                result.losses.append(gradient_step(q, target, optimizer, buffer.sample(s.batch_size, rng), s))
        if calls % max(1, s.target_update_interval // s.num_envs) == 0:
            update_target(q, target, s.tau)
    envs.close()
    return result


def gradient_step(q: nn.Module, target: nn.Module, optimizer: torch.optim.Optimizer,
                  batch: tuple[torch.Tensor, ...], s: DQNSettings) -> float:
    obs, actions, rewards, next_obs, terminated = batch
    with torch.no_grad():
        discounts = s.gamma * (1.0 - terminated)
        next_target = target(next_obs)
        y = (double_q_target(rewards, discounts, q(next_obs), next_target) if s.double_q
             else q_learning_target(rewards, discounts, next_target))
    values = q(obs).gather(-1, actions[:, None]).squeeze(-1)
    loss = F.smooth_l1_loss(values, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(list(q.parameters()), s.max_grad_norm)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def update_target(q: nn.Module, target: nn.Module, tau: float) -> None:
    """theta_target <- tau theta + (1 - tau) theta_target (tau = 1: a hard copy)."""
    for p, t in zip(q.parameters(), target.parameters(), strict=True):
        t.mul_(1.0 - tau).add_(p, alpha=tau)


@torch.no_grad()
def evaluate_dqn(q: nn.Module, make: Callable[[], gym.Env], episodes: int, seed: int = 1_000_000) -> list[float]:
    """Greedy returns over ``episodes`` episodes from seeds seed, seed + 1, ..."""
    returns = []
    env = make()
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            action = int(q(torch.as_tensor(obs)[None]).argmax(-1))
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns
