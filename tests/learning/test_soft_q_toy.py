"""Tier 3: soft Q-learning on the toy token MDP reaches the exact posterior pi* = pi0 exp(r / beta) / Z of
configs/toy_exact.yaml (the 8-letter toy LM writes 4 letters after "a", reward the share of "a", beta
0.2): the learned policy pi = pi0 exp(Q / beta) / Z(s), composed over the prefix tree, ends within 0.05
nats of pi*, the same target every token-level algorithm reaches in tests/learning/test_toy.py; so does
the run of configs/soft_q_toy.yaml (``kind: tabular``) end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from langrl.agents.tabular import learn, soft_value_iteration, tabular_model
from langrl.api import train
from langrl.bayes.exact import compare_to_optimum, enumerate_sequences
from langrl.envs.token_mdp import TokenTree, TokenTreeEnv, prefix_logprobs, sequence_logprobs
from langrl.envs.toy import letter_reward, toy_lm
from langrl.rl.td import soft_policy

BETA, V, L = 0.2, 8, 4


@pytest.fixture(scope="module")
def task():
    lm = toy_lm(seed=0)
    texts = lm.tokenizer.batch_decode(enumerate_sequences(V, L))
    rewards = torch.tensor(letter_reward(["a"] * len(texts), texts, letter="a"), dtype=torch.float64)
    tree = TokenTree(V, L)
    ref = prefix_logprobs(lm.model, lm.tokenizer("a")["input_ids"], tree)
    return rewards, tree, ref


def test_the_tree_and_its_reference_are_exact(task):
    rewards, tree, ref = task
    assert tree.n_states == 1 + 8 + 64 + 512 + 4096
    assert [tree.prefix(tree.state(p)) for p in ([], [3], [7, 0, 2, 5])] == [[], [3], [7, 0, 2, 5]]
    assert float(torch.logsumexp(sequence_logprobs(tree, ref), 0)) == pytest.approx(0.0, abs=1e-9)
    env = TokenTreeEnv(rewards.tolist(), V, L)
    env.reset(seed=0)
    for token in (0, 0, 1):
        _, reward, done, _, _ = env.step(token)
        assert (reward, done) == (0.0, False)
    assert env.step(0)[1:3] == (0.75, True)  # "aaba": three a's of four


def test_soft_value_iteration_on_the_tree_is_the_posterior(task):
    rewards, tree, ref = task
    q_star = soft_value_iteration(tabular_model(TokenTreeEnv(rewards.tolist(), V, L)), 1.0, BETA, ref)
    pi = sequence_logprobs(tree, soft_policy(q_star, ref, BETA))
    report = compare_to_optimum(pi, sequence_logprobs(tree, ref), rewards, BETA)
    assert report.kl_pi_to_opt < 1e-9 and float(q_star[0].max()) > 0


def test_soft_q_learning_reaches_the_posterior(task):
    rewards, tree, ref = task
    ref_seq = sequence_logprobs(tree, ref)
    start = compare_to_optimum(ref_seq, ref_seq, rewards, BETA).kl_pi_to_opt

    def make() -> TokenTreeEnv:
        return TokenTreeEnv(rewards.tolist(), V, L)

    result = learn(make, "soft_q", gamma=1.0, steps=60_000, num_envs=64, epsilon=(1.0, 1.0, 1.0), alpha0=1.0,
                   omega=0.0, beta=BETA, ref_logprobs=ref, seed=0)
    report = compare_to_optimum(sequence_logprobs(tree, soft_policy(result.q, ref, BETA)), ref_seq, rewards, BETA)
    assert start > 0.3 and report.kl_pi_to_opt < 0.05, (start, report)


def test_the_soft_q_toy_config_reaches_the_posterior(tmp_path):
    config = Path(__file__).resolve().parents[2] / "configs" / "soft_q_toy.yaml"
    result = train(config, output=tmp_path / "run", overrides=["log.progress=false"])
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    kl = [r["exact/kl_to_optimum"] for r in rows]
    assert kl[0] > 0.05 and kl[-1] < 0.05, kl  # the first chunk is not there yet; the last is
    assert result.metrics["env/steps"] >= 50_000
