"""Dyna (Sutton 1990; Sutton & Barto 2018, sec. 8.2) with soft Q-learning on the toy token MDP: learn a
tabular model from real episodes, and learn Q from the real transitions *and* from transitions imagined
with the model, toward the KL-regularised optimum pi* = pi0 exp(r / beta) / Z.

One step of :meth:`SoftDyna.step`:

    act      E real episodes (completions) from the current policy pi(a|s) = pi0(a|s) exp(Q(s,a)/beta) / Z(s)
    learn    soft Q-learning on their transitions: Q(s,a) <- Q(s,a) + alpha [y - Q(s,a)],
             y = r + (1 - done) beta log sum_a' pi0(a'|s') exp(Q(s',a') / beta)    (`langrl.rl.td`)
    model    count them in a `CountsModel` (the transitions and the mean reward of each observed (s, a))
    plan     ``planning_updates`` imagined transitions per real one: (s, a) drawn uniformly among those
             observed, (r, s', done) from the model's ``step``, the same soft Q update on them

A pair never observed keeps Q = 0, so the policy there is pi0: what the agent has not seen it leaves to the
prior. On the token tree the transitions are deterministic and the reward a function of the completion,
so once a completion is seen its reward is known exactly and the planning updates carry it back to the
root without another real sample: Dyna reaches pi* with fewer real completions than model-free
REINFORCE (benchmarks/RESULTS_planning.md).

The policy is exact on the enumerable space: composing pi over the prefix tree gives every completion's
probability (`langrl.envs.token_mdp.sequence_logprobs`), compared with pi* by `langrl.bayes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from langrl.agents.tabular import update
from langrl.bayes.exact import compare_to_optimum, enumerate_sequences
from langrl.envs.token_mdp import TokenTree, TokenTreeEnv, prefix_logprobs, sequence_logprobs
from langrl.models.lm import LM
from langrl.planning.world_models import CountsModel
from langrl.rl.td import soft_policy, soft_q_target


@dataclass
class ToyTask:
    """The toy token MDP of one prompt: the prefix tree, log pi0 per prefix ``ref`` (S, V), the reward of
    each of the V^L completions (lexicographic), and beta."""

    tree: TokenTree
    ref: torch.Tensor
    rewards: torch.Tensor
    beta: float
    ref_seq: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.ref_seq = sequence_logprobs(self.tree, self.ref)

    def env(self) -> TokenTreeEnv:
        """The real environment."""
        return TokenTreeEnv(self.rewards.tolist(), self.tree.vocab_size, self.tree.length)

    def exact(self, q: torch.Tensor) -> dict[str, float]:
        """The soft policy of ``q`` against pi*, exactly: ``exact/kl_to_optimum`` = KL(pi || pi*), ..."""
        pi = sequence_logprobs(self.tree, soft_policy(q, self.ref, self.beta))
        report = compare_to_optimum(pi, self.ref_seq, self.rewards, self.beta)
        return {"exact/kl_to_optimum": report.kl_pi_to_opt, "exact/kl_optimum_to_pi": report.kl_opt_to_pi,
                "exact/tv_to_optimum": report.tv, "exact/reward": report.reward_pi,
                "exact/reward_optimum": report.reward_opt, "exact/kl_ref": report.kl_pi_to_ref}


def toy_task(lm: LM, prompt: str, length: int, reward: Callable[[list[str], list[str]], Sequence[float]],
             beta: float) -> ToyTask:
    """The task of ``prompt``: pi0 is ``lm`` (every prefix scored exactly), the reward is ``reward`` on the
    decoded completions."""
    vocab = len(lm.tokenizer)
    tree = TokenTree(vocab, length)
    texts = lm.tokenizer.batch_decode(enumerate_sequences(vocab, length))
    rewards = torch.tensor([float(r) for r in reward([prompt] * len(texts), texts)], dtype=torch.float64)
    ref = prefix_logprobs(lm.model, lm.tokenizer(prompt)["input_ids"], tree)
    return ToyTask(tree, ref, rewards, beta)


@dataclass
class DynaStats:
    real_episodes: int = 0
    real_steps: int = 0
    imagined: int = 0


class SoftDyna:
    """Dyna with soft Q-learning on a `ToyTask` (see the module doc); everything it learns is picklable, so
    a checkpoint holds it whole.

    :param episodes: real episodes (completions) per step
    :param planning_updates: imagined transitions per real transition (Dyna's n; 0 is soft Q-learning alone)
    :param batch_size: imagined transitions per batched update
    :param alpha: step size of every update (1 with a deterministic model: Q takes the target)
    """

    def __init__(self, task: ToyTask, episodes: int = 16, planning_updates: int = 20, batch_size: int = 256,
                 alpha: float = 1.0):
        self.task, self.episodes, self.planning_updates = task, episodes, planning_updates
        self.batch_size, self.alpha = batch_size, alpha
        n_s, n_a = task.tree.n_states, task.tree.vocab_size
        self.q = torch.zeros(n_s, n_a, dtype=torch.float64)
        self.counts = torch.zeros(n_s, n_a, dtype=torch.float64)
        self.model = CountsModel(n_s, n_a)
        self.envs = [task.env() for _ in range(episodes)]  # the real environment, one per episode of a step
        self.stats = DynaStats()

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: Q, the update counts, the learned model and the counters (the task is
        rebuilt from the config)."""
        return {"q": self.q, "counts": self.counts, "model": self.model, "stats": self.stats}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["q"].shape != self.q.shape:
            raise ValueError(f"a Dyna state of Q {tuple(state['q'].shape)} for a task of {tuple(self.q.shape)}")
        self.q, self.counts, self.model, self.stats = state["q"], state["counts"], state["model"], state["stats"]

    def policy_probs(self) -> torch.Tensor:
        """(S, A) pi(a | s) = pi0(a | s) exp(Q(s, a) / beta) / Z(s)."""
        return soft_policy(self.q, self.task.ref, self.task.beta).exp()

    def act(self, generator: torch.Generator) -> tuple[list[tuple[int, int, float, int, bool]], list[float]]:
        """``episodes`` real episodes from the current policy, side by side (one draw per depth for all):
        their transitions and returns."""
        probs = self.policy_probs()
        envs = self.envs
        states = [env.reset()[0] for env in envs]
        running = list(range(len(envs)))
        transitions, returns = [], [0.0] * len(envs)
        while running:
            draws = torch.multinomial(probs[[states[i] for i in running]], 1, generator=generator)[:, 0].tolist()
            still = []
            for i, a in zip(running, draws, strict=True):
                s2, r, terminated, truncated, _ = envs[i].step(a)
                transitions.append((states[i], a, float(r), int(s2), bool(terminated)))
                returns[i] += float(r)
                states[i] = int(s2)
                if not (terminated or truncated):
                    still.append(i)
            running = still
        return transitions, returns

    def soft_update(self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                    next_states: torch.Tensor, dones: torch.Tensor) -> None:
        """The soft Q update of one batch of transitions (`langrl.agents.tabular.update` averages the TD
        errors of a pair that occurs more than once)."""
        ref = self.task.ref
        targets = soft_q_target(rewards, 1.0 - dones, self.q[next_states], ref[next_states], self.task.beta)
        td = targets - self.q[states, actions]
        update(self.q, self.counts, states, actions, td, self.alpha, 0.0)

    def plan(self, n: int, generator: torch.Generator) -> None:
        """``n`` imagined transitions from the model, in batches of ``batch_size``."""
        seen = np.flatnonzero(self.model.visits.reshape(-1) > 0)
        n_a = self.task.tree.vocab_size
        for start in range(0, n, self.batch_size):
            k = min(self.batch_size, n - start)
            picks = seen[torch.randint(len(seen), (k,), generator=generator).numpy()]
            states, actions = picks // n_a, picks % n_a
            nxt, rewards, dones = self.model.step_many(states, actions)
            self.soft_update(torch.from_numpy(states), torch.from_numpy(actions), torch.from_numpy(rewards),
                             torch.from_numpy(nxt), torch.from_numpy(dones.astype(np.float64)))
            self.stats.imagined += k

    def step(self, generator: torch.Generator) -> dict[str, float]:
        """One Dyna step (act, learn, model, plan); returns the step's metrics and the exact ones."""
        transitions, returns = self.act(generator)
        s, a, r, s2, d = zip(*transitions, strict=True)
        self.soft_update(torch.tensor(s), torch.tensor(a), torch.tensor(r, dtype=torch.float64), torch.tensor(s2),
                         torch.tensor(d, dtype=torch.float64))
        for t in transitions:
            self.model.observe(*t)
        self.stats.real_episodes += len(returns)
        self.stats.real_steps += len(transitions)
        self.plan(self.planning_updates * len(transitions), generator)
        return {"env/steps": self.stats.real_steps, "env/episodes": self.stats.real_episodes,
                "dyna/imagined": self.stats.imagined, "model/pairs": int((self.model.visits > 0).sum()),
                "rollout/return": float(np.mean(returns)), **self.task.exact(self.q)}


__all__ = ["DynaStats", "SoftDyna", "ToyTask", "toy_task"]
