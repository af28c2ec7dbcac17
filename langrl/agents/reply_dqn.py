"""Reply selection with DQN: the classic DQN dialogue manager over replies sampled from a frozen LM.

Each turn the frozen LM samples K candidate replies for every running conversation (one `sample` call for all
of them: K rows per conversation, the context's prefill shared), and a Q-network scores each candidate in its
context; the chosen reply is sent to the simulated user, whose per-turn reward trains the Q-network
(Mnih et al. 2015; over sampled candidate actions as in the DRRN of He et al. 2016 and the sampled-candidate
dialogue managers of Serban et al. 2017). The LM never changes: what is learned is which of its own samples to say.

Features (computed once per turn under ``torch.inference_mode()``, kept as float32): the frozen LM's final
hidden states (its transformer without the LM head), mean-pooled (`pool_hidden`) over

- the history h: the rendered conversation so far (the chat template's tokens up to the generation prompt),
- each candidate c_k: the candidate's own tokens (EOS included when sampled) read in context, i.e. the
  positions of the candidate when context + candidate runs through the LM. The context is run once and its KV
  cache repeated K times, so the K candidates share the context's computation.

A state is the row ``[h, c_1, ..., c_K]`` of (K + 1) H numbers (H the LM's hidden size): the replay buffer keeps
these rows (`langrl.agents.dqn.ReplayBuffer`), so no LM pass is ever repeated for a gradient step.

Q-network (:class:`ReplyQNetwork`): h and each c_k are standardised with running statistics (pooled LM states
have a few huge, nearly constant dimensions: see `langrl.agents.encoder`), then one MLP maps
``[h, c_k, h * c_k]`` (3H numbers: the history, the candidate and their elementwise interaction) to the scalar
Q(h, c_k); applied to the K candidates at once it gives Q(s, .) of shape (B, K), so a state's candidates play the
role of DQN's discrete actions.

Learning (:class:`ReplyDQN`): epsilon-greedy over the K candidates (epsilon decayed linearly over the training
episodes), transitions (s, a, r, s', done) with s' the next turn's state (its own K fresh candidates), and

    y    = r + gamma (1 - done) max_{c' in C'} Q_target(h', c')      (double: Q_target of the online argmax)
    loss = Huber(Q(h, c_a) - y),  gradient norm clipped, target network copied every target_update_every steps

(`langrl.rl.td.q_learning_target` / `double_q_target`). ``done`` is 1 when the episode ended after the turn:
the user was satisfied (terminated), left, or the turn limit was reached. The turn limit is part of the task
(the user's patience) and the history shows how many turns were used, so the last state's value is 0 and no
candidates are sampled for it. A conversation's transition is completed one turn later, when its next state's
features are computed.

KL to the base LM: greedy selection of the best of K i.i.d. samples by a fixed score (Q(h, .) given the history)
is best-of-K sampling, whose KL to the sampling distribution is at most log K - (K - 1)/K nats per turn
(Beirami et al. 2024; `langrl.bayes.best_of_n.best_of_n_kl_bound`), so at most turns x that per episode, however
Q is trained: 0.636 nats per turn for K = 4. The base policy is the LM at ``sampling.temperature`` (and top-p/k);
the first candidate of each turn is an exact sample of it, which evaluation plays as the baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from langrl.agents.dqn import ReplayBuffer, update_target
from langrl.agents.encoder import RunningStandardize, pool_hidden
from langrl.bayes.best_of_n import best_of_n_kl_bound
from langrl.envs.prompts import left_pad
from langrl.models.cache import cache_kwargs, output_cache
from langrl.rl.td import double_q_target, q_learning_target
from langrl.rollout.dialogue import Conversation, TurnRenderer, start, step
from langrl.rollout.tokens import SamplingConfig, sample
from langrl.run.optim import clip_gradients

# ---------------------------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """One sampled reply: its tokens as sampled (EOS included when sampled), their log-probs, its text."""

    tokens: list[int]
    logprobs: list[float]
    text: str


def sample_candidates(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, contexts: Sequence[list[int]],
                      sampling: SamplingConfig, k: int, generator: torch.Generator) -> list[list[Candidate]]:
    """K candidate replies for each context (token ids): one `sample` call, rows ``p * K + j``."""
    device = next(model.parameters()).device
    ids, mask = left_pad(list(contexts), tokenizer.pad_token_id, device)
    rollout = sample(model, ids, mask, replace(sampling, group_size=k), tokenizer.eos_token_id,
                     tokenizer.pad_token_id, generator)
    lengths = rollout.completion_mask.sum(-1).tolist()
    flat = []
    for row, logp, length in zip(rollout.completion_ids.tolist(), rollout.logprobs.tolist(), lengths, strict=True):
        tokens = row[:int(length)]
        text_ids = tokens[:-1] if tokens and tokens[-1] == tokenizer.eos_token_id else tokens
        flat.append(Candidate(tokens, logp[:int(length)], cast(str, tokenizer.decode(text_ids))))
    return [flat[p * k:(p + 1) * k] for p in range(len(contexts))]


# ---------------------------------------------------------------------------------------------- features


def right_pad(rows: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask, right-padded to the longest row (at least one column)."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def backbone(model: PreTrainedModel) -> nn.Module:
    """The transformer without its LM head (the head's vocabulary projection is not needed for features)."""
    return model.base_model


def encode_turn(model: PreTrainedModel, contexts: Sequence[list[int]], candidates: Sequence[Sequence[Candidate]],
                pad_id: int) -> torch.Tensor:
    """States (N, (K + 1) H), float32 on the model's device: per context its pooled history features, then each of
    its K candidates' pooled features in context (see the module docstring). The contexts are run once; their KV
    cache is repeated K times for the candidates."""
    k = len(candidates[0])
    device = next(model.parameters()).device
    net = backbone(model)
    with torch.inference_mode():
        ids, mask = left_pad(list(contexts), pad_id, device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = net(input_ids=ids, attention_mask=mask, position_ids=positions,
                  **cache_kwargs(net, DynamicCache()), use_cache=True)
        history = pool_hidden(out.last_hidden_state.float(), mask, "mean")
        cache = output_cache(out)
        cache.batch_repeat_interleave(k)
        reply_ids, reply_mask = right_pad([c.tokens for row in candidates for c in row], pad_id, device)
        reply_positions = positions[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(reply_ids.size(1),
                                                                                        device=device)
        full_mask = torch.cat([mask.repeat_interleave(k, 0), reply_mask], dim=1)
        out = net(input_ids=reply_ids, attention_mask=full_mask, position_ids=reply_positions,
                  **cache_kwargs(net, cache), use_cache=True)
        replies = pool_hidden(out.last_hidden_state.float(), reply_mask, "mean").view(len(contexts), -1)
        states = torch.cat([history, replies], dim=1)
    return states.clone()  # a normal tensor: inference tensors cannot enter the Q-network's autograd


# ---------------------------------------------------------------------------------------------- Q-network


class ReplyQNetwork(nn.Module):
    """States (B, (K + 1) H) = [h, c_1..c_K] -> Q(h, c_k) (B, K): standardised h and c_k, then one MLP on
    ``[h, c_k, h * c_k]`` -> scalar, shared by the K candidates."""

    def __init__(self, dim: int, k: int, hidden: Sequence[int], normalize: bool = True):
        super().__init__()
        self.dim, self.k = dim, k
        self.history_norm: nn.Module = RunningStandardize(dim) if normalize else nn.Identity()
        self.reply_norm: nn.Module = RunningStandardize(dim) if normalize else nn.Identity()
        sizes = [3 * dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))

    def split(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, (K + 1) H) -> h (B, H), C (B, K, H)."""
        return states[:, :self.dim], states[:, self.dim:].reshape(states.size(0), self.k, self.dim)

    @torch.no_grad()
    def observe(self, states: torch.Tensor) -> None:
        """Fold the features of states acted in into the running statistics (no-op without ``normalize``)."""
        h, c = self.split(states)
        if isinstance(self.history_norm, RunningStandardize):
            self.history_norm.update(h)
        if isinstance(self.reply_norm, RunningStandardize):
            self.reply_norm.update(c.reshape(-1, self.dim))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        h, c = self.split(states.float())
        h = self.history_norm(h).unsqueeze(1).expand(-1, self.k, -1)
        c = self.reply_norm(c)
        return cast(torch.Tensor, self.mlp(torch.cat([h, c, h * c], dim=-1)).squeeze(-1))


# ---------------------------------------------------------------------------------------------- learning


@dataclass(frozen=True)
class ReplySettings:
    """DQN's hyperparameters for reply selection (the ``reply_dqn`` config section's, by name)."""

    candidates: int = 4
    gamma: float = 0.9
    lr: float = 1e-3
    hidden: tuple[int, ...] = (256,)
    normalize: bool = True
    buffer_size: int = 5_000
    batch_size: int = 32
    learning_starts: int = 64
    train_every: int = 1
    gradient_steps: int = 1
    target_update_every: int = 50
    double_q: bool = False
    max_grad_norm: float = 10.0


def td_targets(q: nn.Module, target: nn.Module, rewards: torch.Tensor, next_states: torch.Tensor,
               done: torch.Tensor, gamma: float, double_q: bool = False) -> torch.Tensor:
    """(B,) targets y = r + gamma (1 - done) max_k Q_target(s', k); double: Q_target(s', argmax_k Q(s', k))."""
    with torch.no_grad():
        discounts = gamma * (1.0 - done)
        next_target = target(next_states)
        if double_q:
            return double_q_target(rewards, discounts, q(next_states), next_target)
        return q_learning_target(rewards, discounts, next_target)


@dataclass
class UpdateStats:
    """What the gradient steps of a stretch of play did."""

    losses: list[float] = field(default_factory=list)
    q_values: list[float] = field(default_factory=list)  # mean Q(s, a) of each batch

    def metrics(self) -> dict[str, float]:
        if not self.losses:
            return {}
        return {"loss/td": float(np.mean(self.losses)), "q/mean": float(np.mean(self.q_values))}


class ReplyDQN:
    """The learner: online and target networks, Adam, the replay buffer of states, and its counters.

    Everything a resumed run needs is here: ``q``, ``target`` and ``optimizer`` (modules and optimizer of a
    checkpoint), ``buffer`` (picklable, the filled part only) and ``transitions`` / ``updates`` (trainer state).
    Random draws come from the generator passed to each call, so that a caller can derive it from its step.
    """

    def __init__(self, dim: int, s: ReplySettings, device: torch.device | str = "cpu"):
        self.s, self.dim, self.device = s, dim, torch.device(device)
        self.q = self.build()
        self.target = self.build()
        self.target.load_state_dict(self.q.state_dict())
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=s.lr)
        self.buffer = ReplayBuffer(s.buffer_size, ((s.candidates + 1) * dim,), np.float32)
        self.transitions = 0
        self.updates = 0

    def build(self) -> ReplyQNetwork:
        return ReplyQNetwork(self.dim, self.s.candidates, self.s.hidden, self.s.normalize).to(self.device)

    def add(self, state: np.ndarray, action: int, reward: float, next_state: np.ndarray | None,
            rng: np.random.Generator, stats: UpdateStats) -> None:
        """Store one transition (``next_state`` None: the episode ended) and train when due."""
        done = next_state is None
        nxt = np.zeros_like(state) if next_state is None else next_state
        self.buffer.add(state[None], np.array([action]), np.array([reward], dtype=np.float32), nxt[None],
                        np.array([float(done)], dtype=np.float32))
        self.transitions += 1
        s = self.s
        if self.transitions >= max(s.learning_starts, s.batch_size) and self.transitions % s.train_every == 0:
            for _ in range(s.gradient_steps):
                loss, q_mean = self.gradient_step(self.buffer.sample(s.batch_size, rng, self.device))
                stats.losses.append(loss)
                stats.q_values.append(q_mean)

    def gradient_step(self, batch: tuple[torch.Tensor, ...]) -> tuple[float, float]:
        """One Huber TD step on (states, actions, rewards, next states, done); a hard target copy when due."""
        states, actions, rewards, next_states, done = batch
        y = td_targets(self.q, self.target, rewards, next_states, done, self.s.gamma, self.s.double_q)
        values = self.q(states).gather(-1, actions[:, None]).squeeze(-1)
        loss = F.smooth_l1_loss(values, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(list(self.q.parameters()), self.s.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.s.target_update_every == 0:
            update_target(self.q, self.target, 1.0)  # also copies the running feature statistics
        return float(loss.detach()), float(values.detach().mean())


def epsilon_at(episodes_done: int, total: int, initial: float, final: float, fraction: float) -> float:
    """Linear decay from ``initial`` to ``final`` over ``fraction`` of the ``total`` training episodes."""
    progress = min(1.0, episodes_done / max(1.0, fraction * total))
    return initial + progress * (final - initial)


# ---------------------------------------------------------------------------------------------- selectors


class Selector(Protocol):
    """Chooses a candidate per running conversation, and sees what the choice earned."""

    def choose(self, rows: list[int], states: torch.Tensor, replies: Sequence[Sequence[str]]) -> list[int]:
        """Indices in 0..K-1 for the conversations ``rows`` (indices into the episode batch) in ``states``;
        ``replies`` holds each row's K candidate texts (only an oracle reads them)."""
        ...

    def record(self, rows: list[int], rewards: list[float], ended: list[bool]) -> None:
        """The rewards of the chosen replies and whether each episode ended with that turn."""
        ...


class FirstCandidate:
    """The baseline: always the first candidate, i.e. the base LM's own sample (no selection)."""

    def choose(self, rows: list[int], states: torch.Tensor, replies: Sequence[Sequence[str]]) -> list[int]:
        return [0] * len(rows)

    def record(self, rows: list[int], rewards: list[float], ended: list[bool]) -> None:
        pass


class Greedy:
    """The trained dialogue manager: the candidate with the highest Q(h, c)."""

    def __init__(self, q: nn.Module):
        self.q = q

    def choose(self, rows: list[int], states: torch.Tensor, replies: Sequence[Sequence[str]]) -> list[int]:
        with torch.no_grad():
            return [int(a) for a in self.q(states).argmax(-1).tolist()]

    def record(self, rows: list[int], rewards: list[float], ended: list[bool]) -> None:
        pass


class UserOracle:
    """An upper bound, not a policy: the candidate the simulated user itself rewards most for this turn (the first
    of equals), found by stepping a copy of each conversation's environment with every candidate. It reads the
    user's rules, so it shows what choosing among these K samples could gain at best (one turn ahead), for rule-
    based users whose environments can be copied."""

    def __init__(self, envs: Sequence[gym.Env]):
        self.envs = envs

    def choose(self, rows: list[int], states: torch.Tensor, replies: Sequence[Sequence[str]]) -> list[int]:
        return [int(np.argmax([float(copy.deepcopy(self.envs[row]).step(text)[1]) for text in texts]))
                for row, texts in zip(rows, replies, strict=True)]

    def record(self, rows: list[int], rewards: list[float], ended: list[bool]) -> None:
        pass


class EpsilonGreedy:
    """Training: epsilon-greedy choices, and the transitions they make, completed when the next state is known.

    ``rng`` draws the exploration coins, the random candidates and the replay minibatches.
    """

    def __init__(self, learner: ReplyDQN, epsilon: float, rng: np.random.Generator):
        self.learner, self.epsilon, self.rng = learner, epsilon, rng
        self.stats = UpdateStats()
        self.pending: dict[int, tuple[np.ndarray, int, float]] = {}  # row -> (state, action, reward)
        self.current: dict[int, tuple[np.ndarray, int]] = {}  # row -> (state, action) of this turn

    def choose(self, rows: list[int], states: torch.Tensor, replies: Sequence[Sequence[str]]) -> list[int]:
        learner, k = self.learner, self.learner.s.candidates
        array = states.detach().cpu().numpy()
        for row, state in zip(rows, array, strict=True):  # last turn's transitions end in these states
            if row in self.pending:
                prev, action, reward = self.pending.pop(row)
                learner.add(prev, action, reward, state, self.rng, self.stats)
        learner.q.observe(states.to(learner.device))
        with torch.no_grad():
            greedy = learner.q(states.to(learner.device)).argmax(-1).cpu().numpy()
        explore = self.rng.random(len(rows)) < self.epsilon
        random = self.rng.integers(0, k, len(rows))
        actions = [int(a) for a in np.where(explore, random, greedy)]
        self.current = {row: (state, a) for row, state, a in zip(rows, array, actions, strict=True)}
        return actions

    def record(self, rows: list[int], rewards: list[float], ended: list[bool]) -> None:
        for row, reward, end in zip(rows, rewards, ended, strict=True):
            state, action = self.current.pop(row)
            if end:
                self.learner.add(state, action, reward, None, self.rng, self.stats)
            else:
                self.pending[row] = (state, action, reward)


# ---------------------------------------------------------------------------------------------- episodes


@dataclass
class ReplyLM:
    """The frozen LM that proposes and encodes replies, and how it renders and samples them."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    renderer: TurnRenderer
    sampling: SamplingConfig
    k: int
    max_context: int = 1024

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def candidates(self, contexts: Sequence[list[int]], generator: torch.Generator) -> list[list[Candidate]]:
        return sample_candidates(self.model, self.tokenizer, contexts, self.sampling, self.k, generator)

    def states(self, contexts: Sequence[list[int]], candidates: Sequence[Sequence[Candidate]]) -> torch.Tensor:
        return encode_turn(self.model, contexts, candidates, self.tokenizer.pad_token_id)


def play_episodes(lm: ReplyLM, envs: Sequence[gym.Env], reset_seeds: Sequence[int], selector: Selector,
                  generator: torch.Generator) -> list[Conversation]:
    """One episode in each environment, all advancing together: each turn K candidates per running conversation
    (one sampling call), their states (one feature pass), the selector's choices sent to the users.

    An episode ends when its environment says so or when its context would exceed ``lm.max_context`` tokens.
    """
    conversations = start(envs, lm.renderer, reset_seeds, [None] * len(envs))
    while active := [i for i, c in enumerate(conversations) if not c.done]:
        contexts = [conversations[i].context for i in active]
        candidates = lm.candidates(contexts, generator)
        states = lm.states(contexts, candidates)
        choices = selector.choose(active, states, [[c.text for c in options] for options in candidates])
        for i, options, choice in zip(active, candidates, choices, strict=True):
            reply = options[choice]
            step(conversations[i], envs[i], lm.renderer, reply.tokens, reply.logprobs, reply.text,
                 lm.max_context, lm.sampling.max_new_tokens)
        selector.record(active, [conversations[i].rewards[-1] for i in active],
                        [conversations[i].done for i in active])
    return conversations


def kl_bound_per_turn(k: int) -> float:
    """The best-of-K bound on KL(selector || base LM) per turn, log K - (K - 1)/K nats."""
    return best_of_n_kl_bound(k)


def summarise_conversations(conversations: Sequence[Conversation]) -> dict[str, float]:
    """Episodes, success rate, mean return and turns per episode."""
    return {"episodes": float(len(conversations)),
            "success_rate": float(np.mean([bool(c.info.get("success")) for c in conversations])),
            "mean_return": float(np.mean([c.episode_return for c in conversations])),
            "turns": float(np.mean([len(c.rewards) for c in conversations]))}
