"""DQN (Mnih et al. 2015), readable top to bottom: a replay buffer, an online and a target Q-network,
epsilon-greedy acting in vectorised Gymnasium environments, Huber TD loss, gradient clipping, hard or
Polyak target updates, and double DQN (van Hasselt et al. 2016) as an option.

    y    = r + gamma (1 - terminated) max_a' Q_target(s', a')          (double: Q_target(s', argmax Q(s', .)))
    loss = Huber(Q(s, a) - y)

The targets are `langrl.rl.td`'s pure functions. The network is any module mapping a batch of
observations to (B, A) action values: :class:`MLP` on numeric observations by default.

Training is resumable in chunks: a :class:`DQNLearner` holds all the state of a run (``q``, ``target``,
``optimizer`` and ``state``: the replay buffer, the environments mid-episode, the random generator and the
step counters), and ``advance(n)`` runs ``n`` more environment steps. Advancing 300 then 300 steps does
what advancing 600 does, and a learner whose parts were saved and restored continues as the uninterrupted
one (`langrl.agents.dqn_run` checkpoints them).

Evaluation and best-model selection follow SB3's ``EvalCallback``, as the RL Zoo trains: every
``eval_every`` environment steps the greedy policy plays ``eval_episodes`` episodes from held-out seeds,
and the network with the highest mean return so far is kept (only a strictly higher mean replaces it, so
among ties the earliest stays). DQN's last network on CartPole is unstable (benchmarks/RESULTS_value.md);
the best one is what the Zoo reports. The maximum over many evaluations is biased upward, so an honest
figure re-evaluates the best network on other seeds.

Acting follows SB3's DQN: uniformly random actions before ``learning_starts``, then epsilon-greedy with
epsilon decayed linearly over ``exploration_fraction`` of the steps; a training phase of
``gradient_steps`` updates every ``train_freq`` steps once past ``learning_starts``; the target network
updated every ``target_update_interval`` steps (all counted over the environments together).

Collection in shards (``shards``, for rollout workers: `langrl.agents.dqn_collect`). Between two training
phases the Q-network does not change, so the vector steps up to the next training can be taken anywhere
with a copy of it. The N environments are cut into ``shards`` contiguous shards, reset with the seeds they
have in one vector environment of all N; each segment of vector steps (from a call to the next training
call, or the end of an ``advance``) steps every shard with its copy of the network and the random stream
(seed, "dqn_step", first call, shard) for the exploration coins and random actions. The learner then takes
the shards' transitions call by call, environments in shard order: it shows a network with ``observe``
the observations (so the statistics the shards acted with are those of the segment's start), stores the
transitions, tallies episodes, trains and updates the target exactly as the step-by-step loop does. Where
the shards ran changes nothing; ``shards=None`` is the step-by-step loop with the learner's generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from langrl.distributed.shards import shard_indices
from langrl.errors import ConfigError
from langrl.rl.td import double_q_target, q_learning_target
from langrl.run import seeds
from langrl.run.optim import clip_gradients

# (observation size, number of actions) -> a module mapping observations (B, ...) to action values (B, A)
NetworkBuilder = Callable[[int, int], nn.Module]


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
    eval_every: int = 0              # environment steps between evaluations; 0: none (no best network)
    eval_episodes: int = 10          # greedy episodes per evaluation, one per seed
    eval_seed_start: int = 1_000_000  # evaluation seeds are eval_seed_start, eval_seed_start + 1, ...
    shards: int | None = None        # collect in this many shards between trainings; None: step by step

    def check(self) -> None:
        if self.learning_starts >= self.total_steps:
            raise ConfigError(f"learning_starts = {self.learning_starts} >= total_steps = {self.total_steps}: "
                              f"DQN would never train; lower learning_starts or raise total_steps")
        if self.batch_size > self.buffer_size:
            raise ConfigError(f"batch_size = {self.batch_size} > buffer_size = {self.buffer_size}: the "
                              f"buffer cannot fill a batch; raise buffer_size or lower batch_size")
        if self.eval_every < 0 or (self.eval_every and self.eval_episodes < 1):
            raise ConfigError(f"eval_every = {self.eval_every}, eval_episodes = {self.eval_episodes}: use "
                              f"eval_every >= 0 (0: no evaluation) and eval_episodes >= 1")
        if self.shards is not None and not 1 <= self.shards <= self.num_envs:
            raise ConfigError(f"shards = {self.shards} with num_envs = {self.num_envs}: each shard needs an "
                              f"environment; use 1 <= shards <= num_envs")


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
        return self.net(obs.flatten(1).float())


def buffer_dtype(space: gym.spaces.Box) -> np.dtype:
    """float32 for real observations; int32 for token ids (half of int64's memory in a 100k buffer)."""
    if np.issubdtype(space.dtype, np.integer) and np.all(space.high < 2**31) and np.all(space.low >= -2**31):
        return np.dtype(np.int32)
    return np.dtype(np.float32)


class ReplayBuffer:
    """A ring buffer of (obs, action, reward, next_obs, terminated) transitions."""

    def __init__(self, size: int, obs_shape: tuple[int, ...], dtype: np.dtype | type = np.float32):
        self.obs = np.zeros((size, *obs_shape), dtype=dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(size, dtype=np.int64)
        self.rewards = np.zeros(size, dtype=np.float32)
        self.terminated = np.zeros(size, dtype=np.float32)
        self.size, self.full, self.pos = size, False, 0

    def __len__(self) -> int:
        return self.size if self.full else self.pos

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray) -> None:
        for i in range(len(actions)):
            p = self.pos
            self.obs[p], self.actions[p], self.rewards[p] = obs[i], actions[i], rewards[i]
            self.next_obs[p], self.terminated[p] = next_obs[i], terminated[i]
            self.pos = (p + 1) % self.size
            self.full = self.full or self.pos == 0

    def __getstate__(self) -> dict[str, object]:
        """Pickle only the filled part: a checkpoint early in a run stays small."""
        n = len(self)
        state = dict(self.__dict__)
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            state[name] = getattr(self, name)[:n].copy()
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        size = int(state["size"])  # type: ignore[call-overload]  # an int, as __init__ set it
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            filled = state[name]
            assert isinstance(filled, np.ndarray)
            full = np.zeros((size, *filled.shape[1:]), dtype=filled.dtype)
            full[:len(filled)] = filled
            state[name] = full
        self.__dict__.update(state)

    def sample(self, batch: int, rng: np.random.Generator,
               device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
        """(obs, actions, rewards, next_obs, terminated) of ``batch`` transitions drawn with replacement."""
        idx = rng.integers(0, len(self), size=batch)
        return tuple(torch.as_tensor(a[idx], device=device) for a in (self.obs, self.actions, self.rewards,
                                                                      self.next_obs, self.terminated))


@dataclass
class DQNState:
    """What a resumed learner needs besides its networks and optimizer (picklable as a whole)."""

    envs: gym.vector.VectorEnv | None  # step by step: all N environments (None when collected in shards)
    buffer: ReplayBuffer
    rng: np.random.Generator           # replay sampling (step by step also exploration coins, random actions)
    obs: np.ndarray | None             # (N, ...) the observations the next actions are taken in (step by step)
    returns: np.ndarray                # (N,) return so far of each environment's running episode
    lengths: np.ndarray                # (N,) its length
    step: int = 0                      # environment steps done, all environments together
    calls: int = 0                     # vector steps done
    shards: list[EnvShard] | None = None  # collected in shards: every shard's environments, in order


@dataclass
class Chunk:
    """What one ``DQNLearner.advance`` call did."""

    env_steps: int = 0                 # the learner's step counter at the end of the chunk
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    q_values: list[float] = field(default_factory=list)   # mean Q(s, a) of each training batch
    epsilon: float = 1.0               # exploration rate at the end of the chunk
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """The chunk's log row: ``env/steps``, ``explore/epsilon``, the mean return and length of the episodes
        that ended in it, the mean TD loss and Q-value of its gradient steps (when there were any)."""
        out: dict[str, float] = {"env/steps": self.env_steps, "explore/epsilon": self.epsilon}
        if self.episode_returns:
            out.update({"rollout/episode_return": float(np.mean(self.episode_returns)),
                        "rollout/episode_length": float(np.mean(self.episode_lengths)),
                        "rollout/episodes": len(self.episode_returns)})
        if self.losses:
            out.update({"loss/td": float(np.mean(self.losses)), "q/mean": float(np.mean(self.q_values))})
        return out


def epsilon_at(step: int, s: DQNSettings) -> float:
    """Linear decay from the initial to the final epsilon over ``exploration_fraction`` of the steps."""
    progress = min(1.0, step / max(1.0, s.exploration_fraction * s.total_steps))
    return s.exploration_initial_eps + progress * (s.exploration_final_eps - s.exploration_initial_eps)


def exploration_rate(step: int, s: DQNSettings) -> float:
    """The chance of a random action at ``step``: 1 before ``learning_starts`` (SB3's warm-up), else epsilon."""
    return 1.0 if step < s.learning_starts else epsilon_at(step, s)


def vector_envs(make: Callable[[], gym.Env], n: int) -> gym.vector.SyncVectorEnv:
    """N environments that reset themselves in the step that ends an episode (SAME_STEP autoreset: the
    returned observation is the next episode's first, ``info["final_obs"]`` the last one)."""
    return gym.vector.SyncVectorEnv([make] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def real_next_obs(nxt: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
    """The observations the actions led to: where an episode ended, its last one (not the next's first)."""
    real = nxt.copy()
    for i in np.flatnonzero(done):
        real[i] = info["final_obs"][i]
    return real


class DQNLearner:
    """DQN's whole state, advanced in chunks of environment steps.

    ``make`` builds one environment (a picklable callable, e.g. a module-level function or a
    ``functools.partial``, when the learner is checkpointed: the vector environment keeps it). ``network``
    builds the Q-network from (observation size, number of actions); a network with an ``observe(obs)``
    method is shown every batch of observations the agent acts in (see `langrl.agents.dqn_run`'s LM encoder
    network, whose feature statistics follow the visited states), and one with ``remember(obs, features)``
    is handed the features the shards computed (so the learner need not encode them again).

    With ``s.shards``, ``collector`` steps the shards (default: `LocalShards` with a network of its own).
    """

    def __init__(self, make: Callable[[], gym.Env], s: DQNSettings, network: NetworkBuilder | None = None,
                 device: torch.device | str = "cpu", collector: ShardCollector | None = None):
        s.check()
        self.s, self.device = s, torch.device(device)
        torch.manual_seed(s.seed)
        envs = vector_envs(make, s.num_envs)
        space, actions = envs.single_observation_space, envs.single_action_space
        if not isinstance(space, gym.spaces.Box) or not isinstance(actions, gym.spaces.Discrete):
            envs.close()
            raise ConfigError(f"DQN needs Box observations and Discrete actions; the environment has {space} "
                              f"and {actions}")
        self.n_actions = int(actions.n)
        obs_dim = int(np.prod(space.shape))
        build = network or (lambda d, a: MLP(d, a, s.hidden))
        self.build: Callable[[], nn.Module] = lambda: build(obs_dim, self.n_actions).to(self.device)
        self.q, self.target = self.build(), self.build()
        self.target.load_state_dict(self.q.state_dict())
        # fused: one kernel for all parameters; at a few thousand parameters per tensor the per-tensor Adam
        # ops cost more than the forward pass (SB3 uses the unfused default: same update, slower)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=s.learning_rate,
                                          fused=self.device.type in ("cpu", "cuda"))
        buffer = ReplayBuffer(s.buffer_size, space.shape, buffer_dtype(space))
        tallies = (np.zeros(s.num_envs), np.zeros(s.num_envs, int))
        self.train_every = max(1, s.train_freq // s.num_envs)  # vector steps between training phases
        self.version = 0  # of the weights the shards act with: it changes whenever the learner changes them
        self.collector: ShardCollector | None = None
        if s.shards is None:
            obs, _ = envs.reset(seed=s.seed)
            self.state = DQNState(envs, buffer, np.random.default_rng(s.seed), obs, *tallies)
            return
        envs.close()
        self.state = DQNState(None, buffer, np.random.default_rng(s.seed), None, *tallies,
                              shards=start_env_shards(make, s))
        if collector is None:
            with torch.random.fork_rng(devices=[]):  # the copy's initial weights are never read
                collector = LocalShards(ShardStepper(self.build(), s, self.device))
        self.collector = collector

    @property
    def step(self) -> int:
        """Environment steps done, all environments together."""
        return self.state.step

    def advance(self, env_steps: int) -> Chunk:
        """Run ``env_steps`` more environment steps (rounded up to whole vector steps); return what they did."""
        chunk, t0 = Chunk(), time.perf_counter()
        calls = -(-env_steps // self.s.num_envs)
        if self.collector is None:
            for _ in range(calls):
                self.env_step(chunk)
        else:
            end = self.state.calls + calls
            while self.state.calls < end:
                self.collect_segment(next_stop(self.state.calls, end, self.train_every) - self.state.calls, chunk)
        chunk.env_steps, chunk.epsilon = self.state.step, exploration_rate(self.state.step, self.s)
        chunk.seconds = time.perf_counter() - t0
        return chunk

    def env_step(self, chunk: Chunk) -> None:
        """One vector step: act, then `record` it."""
        st, s, n = self.state, self.s, self.s.num_envs
        assert st.envs is not None and st.obs is not None, "step by step: one vector environment"
        explore = st.rng.random(n) < exploration_rate(st.step, s)
        actions = st.rng.integers(0, self.n_actions, n)
        obs = torch.as_tensor(st.obs, device=self.device)
        observe = getattr(self.q, "observe", None)
        with torch.no_grad():
            if callable(observe):
                observe(obs)
            if not explore.all():  # all random (the warm-up): no forward pass needed
                actions = np.where(explore, actions, self.q(obs).argmax(-1).cpu().numpy())
        nxt, reward, terminated, truncated, info = st.envs.step(actions)
        # SAME_STEP autoreset: nxt is the next episode's first observation where one ended
        self.record(st.obs, actions, reward, real_next_obs(nxt, terminated | truncated, info), terminated,
                    truncated, chunk)
        st.obs = nxt

    def collect_segment(self, calls: int, chunk: Chunk) -> None:
        """``calls`` vector steps of every shard with the current weights (only the last of them may train),
        then, call by call: take the shards' features, observe, `record`."""
        st = self.state
        assert self.collector is not None and st.shards is not None, "collected in shards"
        steps = join_steps(self.collector.collect(self.q, self.version, st.shards, st.calls, calls))
        observe, remember = getattr(self.q, "observe", None), getattr(self.q, "remember", None)
        features = steps.features if callable(remember) else None
        for t in range(calls):
            if features is not None or callable(observe):
                obs = torch.tensor(steps.obs[t], device=self.device)  # a copy: Ray hands arrays over read-only
                with torch.no_grad():
                    if features is not None and callable(remember):
                        remember(obs, torch.tensor(features[t], device=self.device))
                    if callable(observe):
                        observe(obs)
            self.record(steps.obs[t], steps.actions[t], steps.rewards[t], steps.next_obs[t], steps.terminated[t],
                        steps.truncated[t], chunk)
        if callable(observe):  # the statistics moved: the shards' copies are out of date
            self.version += 1

    def record(self, obs: np.ndarray, actions: np.ndarray, reward: np.ndarray, real_next: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray, chunk: Chunk) -> None:
        """After one vector step: store its transitions, tally the episodes that ended, train when due,
        update the target when due."""
        st, s, n = self.state, self.s, self.s.num_envs
        st.buffer.add(obs, actions, reward, real_next, terminated)
        st.returns += reward
        st.lengths += 1
        for i in np.flatnonzero(terminated | truncated):
            chunk.episode_returns.append(float(st.returns[i]))
            chunk.episode_lengths.append(int(st.lengths[i]))
            st.returns[i], st.lengths[i] = 0.0, 0
        st.calls += 1
        st.step += n
        if st.step > s.learning_starts and st.calls % self.train_every == 0:
            for _ in range(s.gradient_steps):
                loss, q_mean = gradient_step(self.q, self.target, self.optimizer,
                                             st.buffer.sample(s.batch_size, st.rng, self.device), s)
                chunk.losses.append(loss)
                chunk.q_values.append(q_mean)
            self.version += 1
        if st.calls % max(1, s.target_update_interval // n) == 0:
            update_target(self.q, self.target, s.tau)

    def close_envs(self) -> None:
        st = self.state
        for envs in [st.envs] if st.envs is not None else [shard.envs for shard in st.shards or []]:
            envs.close()

    def close(self) -> None:
        """Close the environments and the collector (a Ray collector's workers)."""
        self.close_envs()
        if self.collector is not None:
            self.collector.close()


def gradient_step(q: nn.Module, target: nn.Module, optimizer: torch.optim.Optimizer,
                  batch: tuple[torch.Tensor, ...], s: DQNSettings) -> tuple[float, float]:
    """One Huber TD step on a batch; returns the loss and the batch's mean Q(s, a)."""
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
    return float(loss.detach()), float(values.detach().mean())


@torch.no_grad()
def update_target(q: nn.Module, target: nn.Module, tau: float) -> None:
    """theta_target <- tau theta + (1 - tau) theta_target (tau = 1: a hard copy).

    Buffers named ``running_*`` (feature statistics, batch norm) are copied, as SB3's DQN does: averaging
    statistics makes no sense, and a target that never received them would read unnormalised inputs.
    """
    for p, t in zip(q.parameters(), target.parameters(), strict=True):
        t.mul_(1.0 - tau).add_(p, alpha=tau)
    targets = dict(target.named_buffers())
    for name, buffer in q.named_buffers():
        if name.split(".")[-1].startswith("running_"):
            targets[name].copy_(buffer)


# ---------------------------------------------------------------------------------------------- collection in shards

@dataclass
class EnvShard:
    """A shard's environments between two segments of collection."""

    envs: gym.vector.VectorEnv
    obs: np.ndarray                    # (N_k, ...) the observations the next actions are taken in


@dataclass
class ShardSteps:
    """T vector steps of N_k environments (one shard's, or all shards' joined): arrays (T, N_k, ...)."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray               # the real next observations: an ended episode's last one
    terminated: np.ndarray
    truncated: np.ndarray
    features: np.ndarray | None = None  # (T, N_k, H) the observations encoded, by a network with `features`


def join_steps(parts: Sequence[ShardSteps]) -> ShardSteps:
    """The shards' steps as one vector environment of all N numbers them: (T, N_k, ...) -> (T, N, ...)."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts], axis=1)

    features = None if parts[0].features is None else cat("features")
    return ShardSteps(cat("obs"), cat("actions"), cat("rewards"), cat("next_obs"), cat("terminated"),
                      cat("truncated"), features)


def start_env_shards(make: Callable[[], gym.Env], s: DQNSettings) -> list[EnvShard]:
    """Every shard's environments, reset with the seeds they have in one vector environment of all N."""
    out = []
    for part in shard_indices(range(s.num_envs), s.shards or 1):  # none empty: shards <= num_envs is checked
        envs = vector_envs(make, len(part))
        obs, _ = envs.reset(seed=s.seed + part[0])
        out.append(EnvShard(envs, obs))
    return out


class ShardStepper:
    """Steps shards with its own Q-network, only acting: in the learner's process (`LocalShards`) or on a
    rollout worker (`langrl.agents.dqn_collect`)."""

    def __init__(self, q: nn.Module, s: DQNSettings, device: torch.device | str = "cpu"):
        self.q, self.s, self.device = q, s, torch.device(device)

    @torch.no_grad()
    def step(self, shard: EnvShard, first_call: int, calls: int, index: int) -> ShardSteps:
        """``calls`` vector steps of shard ``index`` (in place) from the run's vector step ``first_call``,
        epsilon-greedy with the stream (seed, "dqn_step", first_call, index). A network with ``features``
        (the LM encoder's) also returns the encoded observations: the learner's statistics need them."""
        s, n = self.s, len(shard.obs)
        rng = np.random.default_rng(seeds.derive_seed(s.seed, "dqn_step", first_call, index))
        n_actions = int(shard.envs.single_action_space.n)  # type: ignore[attr-defined]  # Discrete: checked
        encode = getattr(self.q, "features", None)
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "actions", "rewards", "next_obs",
                                                               "terminated", "truncated", "features")}
        for call in range(first_call, first_call + calls):
            explore = rng.random(n) < exploration_rate(call * s.num_envs, s)
            actions = rng.integers(0, n_actions, n)
            obs = torch.as_tensor(shard.obs, device=self.device)
            if callable(encode):
                columns["features"].append(encode(obs).cpu().numpy())
            if not explore.all():
                actions = np.where(explore, actions, self.q(obs).argmax(-1).cpu().numpy())
            nxt, reward, terminated, truncated, info = shard.envs.step(actions)
            for name, value in (("obs", shard.obs), ("actions", actions), ("rewards", reward),
                                ("next_obs", real_next_obs(nxt, terminated | truncated, info)),
                                ("terminated", terminated), ("truncated", truncated)):
                columns[name].append(value)
            shard.obs = nxt
        stacked = {k: np.stack(v) for k, v in columns.items() if v}
        return ShardSteps(**stacked)


class ShardCollector(Protocol):
    """Where the shards are stepped: `LocalShards`, or rollout workers (`langrl.agents.dqn_collect`)."""

    def collect(self, q: nn.Module, version: int, shards: list[EnvShard], first_call: int,
                calls: int) -> list[ShardSteps]:
        """``calls`` vector steps of every shard from vector step ``first_call``, acting with the weights of
        ``q`` (``version`` changes whenever they do); ``shards[k]`` is left as the environments after them."""
        ...

    def close(self) -> None: ...


class LocalShards:
    """The shards stepped one after another in the learner's process, with a copy of the Q-network loaded
    with the learner's weights when their version changes."""

    def __init__(self, stepper: ShardStepper):
        self.stepper, self.version = stepper, -1

    def collect(self, q: nn.Module, version: int, shards: list[EnvShard], first_call: int,
                calls: int) -> list[ShardSteps]:
        if version != self.version:
            self.stepper.q.load_state_dict(q.state_dict())
            self.version = version
        return [self.stepper.step(shard, first_call, calls, k) for k, shard in enumerate(shards)]

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- evaluation

@dataclass
class EpisodeResult:
    seed: int
    ret: float
    length: int
    success: bool  # terminated (not truncated) on a positive reward, as BabyAI succeeds


@torch.no_grad()
def play_greedy(q: nn.Module, make: Callable[[], gym.Env], seeds: Sequence[int], parallel: int = 10,
                device: torch.device | str | None = None) -> list[EpisodeResult]:
    """One greedy episode per seed (reset with that seed), ``parallel`` environments at a time with one
    batched forward pass per step; results in seed order. ``q`` is not shown the observations
    (``observe``), so what it normalises with stays as training left it."""
    queue = list(seeds)
    envs = [make() for _ in range(min(parallel, len(queue)))]
    running: list[tuple[EpisodeResult, np.ndarray] | None] = [None] * len(envs)
    done: list[EpisodeResult] = []

    def start(slot: int) -> None:
        if queue:
            seed = queue.pop(0)
            obs, _ = envs[slot].reset(seed=seed)
            running[slot] = (EpisodeResult(seed, 0.0, 0, False), obs)
        else:
            running[slot] = None

    for slot in range(len(envs)):
        start(slot)
    while any(r is not None for r in running):
        active = [i for i, r in enumerate(running) if r is not None]
        batch = np.stack([running[i][1] for i in active])  # type: ignore[index]
        actions = q(torch.as_tensor(batch, device=device)).argmax(-1).cpu().numpy()
        for i, action in zip(active, actions, strict=True):
            episode, _ = running[i]  # type: ignore[misc]
            obs, reward, terminated, truncated, _ = envs[i].step(int(action))
            episode.ret += float(reward)
            episode.length += 1
            if terminated or truncated:
                episode.success = bool(terminated and float(reward) > 0)
                done.append(episode)
                start(i)
            else:
                running[i] = (episode, obs)
    for env in envs:
        env.close()
    order = {s: k for k, s in enumerate(seeds)}
    return sorted(done, key=lambda e: order[e.seed])


def summarise(episodes: Sequence[EpisodeResult], success: bool = False) -> dict[str, float]:
    """``mean_return``, ``std_return``, ``mean_length``, ``episodes`` (and ``success_rate`` if asked)."""
    returns = np.array([e.ret for e in episodes], dtype=float)
    out = {"mean_return": float(returns.mean()), "std_return": float(returns.std()),
           "mean_length": float(np.mean([e.length for e in episodes])), "episodes": len(episodes)}
    if success:
        out["success_rate"] = float(np.mean([e.success for e in episodes]))
    return out


def evaluate_dqn(q: nn.Module, make: Callable[[], gym.Env], episodes: int, seed: int = 1_000_000,
                 parallel: int = 10, device: torch.device | str | None = None) -> list[float]:
    """Greedy returns over ``episodes`` episodes from seeds seed, seed + 1, ..."""
    return [e.ret for e in play_greedy(q, make, range(seed, seed + episodes), parallel, device)]


class BestNetwork:
    """The network with the highest mean evaluation return so far (a strictly higher mean replaces it)."""

    def __init__(self, network: nn.Module, mean_return: float = -math.inf, step: int = -1):
        self.network, self.mean_return, self.step = network, mean_return, step

    def offer(self, q: nn.Module, mean_return: float, step: int) -> bool:
        """Keep a copy of ``q`` if ``mean_return`` beats the best so far; return whether it did."""
        if mean_return > self.mean_return:
            self.network.load_state_dict(q.state_dict())
            self.mean_return, self.step = mean_return, step
            return True
        return False


def next_stop(step: int, last: int, *intervals: int) -> int:
    """The first multiple of any nonzero interval after ``step``, at most ``last``."""
    stops = [(step // k + 1) * k for k in intervals if k > 0]
    return min([last, *stops])


# ---------------------------------------------------------------------------------------------- train

@dataclass
class Evaluation:
    env_steps: int
    mean_return: float
    train_s: float  # training wall time up to here, evaluations excluded


@dataclass
class DQNResult:
    q_network: nn.Module
    episode_returns: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    best: BestNetwork | None = None    # with eval_every: the best network, its mean return and step
    train_s: float = 0.0


def train_dqn(make: Callable[[], gym.Env], s: DQNSettings, network: NetworkBuilder | None = None,
              device: torch.device | str = "cpu") -> DQNResult:
    """Train DQN for ``s.total_steps`` environment steps (all environments together); with ``s.eval_every``,
    evaluate every ``eval_every`` steps and at the end, keeping the best network."""
    learner = DQNLearner(make, s, network, device)
    result = DQNResult(q_network=learner.q, best=BestNetwork(learner.build()) if s.eval_every else None)
    seeds = range(s.eval_seed_start, s.eval_seed_start + s.eval_episodes)
    while learner.step < s.total_steps:
        chunk = learner.advance(next_stop(learner.step, s.total_steps, s.eval_every) - learner.step)
        result.episode_returns += chunk.episode_returns
        result.losses += chunk.losses
        result.train_s += chunk.seconds
        if result.best is not None:
            mean = summarise(play_greedy(learner.q, make, seeds, device=device))["mean_return"]
            result.evaluations.append(Evaluation(learner.step, mean, result.train_s))
            result.best.offer(learner.q, mean, learner.step)
    learner.close()
    return result
