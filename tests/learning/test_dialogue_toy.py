"""Tier 3: multi-turn RL reaches the exact optimum of a toy dialogue (``configs/toy_dialogue.yaml``).

The toy LM plays the 2-turn letter-echo game of ``langrl/ToyDialogue-v0``: 8 x 8 = 64 episodes, each played
through the library's own turn rendering. Since the user's tokens follow from the policy's, the optimum of
E[R] - beta KL(pi || pi0) over the policy's tokens is pi* = pi0 exp(R / beta) / Z with pi0(episode) the product of
the policy's two token probabilities, and KL(pi || pi*) is computed exactly.
"""

import pytest
import torch

from langrl.bayes.exact import expected, kl, posterior_logp
from langrl.config import load_any_config
from langrl.envs.text.core import make_env
from langrl.lm.dialogue import DialogueRun, build_run, train_step
from langrl.rollout.dialogue import Conversation, start, step

CONFIG = "configs/toy_dialogue.yaml"


def all_episodes(run: DialogueRun) -> list[Conversation]:
    """Every episode of the opening "b", played letter by letter as the rollout plays it."""
    cfg = run.config
    env = make_env(cfg.env.id, cfg.env.kwargs)
    vocab = cfg.env.kwargs["vocab_size"]
    out = []
    for first in range(vocab):
        for second in range(vocab):
            conversation = start([env], run.renderer, [0], [None])[0]
            for token in (first, second):
                text = run.tokenizer.decode([token])
                step(conversation, env, run.renderer, [token], [0.0], text, cfg.env.max_context, 1)
            out.append(conversation)
    return out


@torch.no_grad()
def episode_logp(model: torch.nn.Module, episodes: list[Conversation]) -> torch.Tensor:
    """log pi(episode): the sum of the log-probs of the policy's tokens (the user's are not the policy's)."""
    ids = torch.tensor([c.context for c in episodes])
    logp = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
    chosen = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    opening = len(episodes[0].opening)
    mask = torch.tensor([[0] * (opening - 1) + c.policy_mask for c in episodes], dtype=torch.bool)
    return (chosen * mask).sum(-1)


def exact(run: DialogueRun, episodes: list[Conversation]) -> tuple[float, float, float]:
    """KL(pi || pi*), E_pi[R] and E_pi*[R], exactly."""
    rewards = torch.tensor([c.episode_return for c in episodes])
    with run.reference.model(run.policy) as ref:
        ref_logp = episode_logp(ref, episodes)
    optimum = posterior_logp(ref_logp, rewards, run.config.kl.coef)
    logp = episode_logp(run.policy, episodes)
    return kl(logp, optimum), expected(logp, rewards), expected(optimum, rewards)


def test_the_episodes_are_all_the_games_and_sum_to_one():
    run = build_run(load_any_config(CONFIG))
    episodes = all_episodes(run)
    assert len({tuple(c.ids) for c in episodes}) == 64
    # turn 1 echoes "b" only with "b"; turn 2 echoes the letter after the first answer
    assert [c.rewards for c in episodes[8 + 2:8 + 4]] == [[1.0, 1.0], [1.0, 0.0]]
    assert sum(c.info["success"] for c in episodes) == 1
    logp = episode_logp(run.policy, episodes)
    assert float(torch.logsumexp(logp.double(), 0)) == pytest.approx(0.0, abs=1e-5)


def test_multi_turn_reinforce_reaches_the_exact_optimum():
    run = build_run(load_any_config(CONFIG, ["log.progress=false"]))
    episodes = all_episodes(run)
    start_kl, start_reward, best_reward = exact(run, episodes)
    assert start_kl > 0.3, "the task must start far from its optimum"
    for n in range(1, run.config.steps + 1):
        train_step(run, n)
    end_kl, end_reward, _ = exact(run, episodes)
    assert end_kl < 0.05, (start_kl, end_kl)
    assert end_reward == pytest.approx(best_reward, abs=0.05)
    assert end_reward > start_reward + 0.3
