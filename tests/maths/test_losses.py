"""Tier 1: the maths against hand-computed values."""

import math

import pytest
import torch

from langrl.models.forward import token_entropy, token_logprobs
from langrl.rl import (
    baseline_advantages,
    clipped_surrogate,
    grpo_advantages,
    kl_exact,
    kl_k1,
    kl_k2,
    kl_k3,
    rloo_advantages,
    seq_mean,
    seq_sum,
    sequence_kl,
    token_mean,
    update_moving_average,
)
from langrl.rollout import filter_logits


def test_grpo_advantages_normalise_within_each_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    adv = grpo_advantages(rewards, eps=0.0 + 1e-8)
    # group 1: mean 2, unbiased std 1 -> (-1, 0, 1); group 2: no spread -> zeros
    torch.testing.assert_close(adv, torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(grpo_advantages(rewards, scale=False)[0], torch.tensor([-1.0, 0.0, 1.0]))


def test_rloo_leaves_one_out():
    adv = rloo_advantages(torch.tensor([[1.0, 2.0, 4.0]]))
    # 1 - (2+4)/2 = -2;  2 - (1+4)/2 = -0.5;  4 - (1+2)/2 = 2.5
    torch.testing.assert_close(adv, torch.tensor([[-2.0, -0.5, 2.5]]))
    with pytest.raises(ValueError, match="group_size"):
        rloo_advantages(torch.tensor([[1.0]]))


def test_reinforce_baseline_and_moving_average():
    torch.testing.assert_close(baseline_advantages(torch.tensor([1.0, 3.0]), 2.5), torch.tensor([-1.5, 0.5]))
    assert update_moving_average(None, torch.tensor([1.0, 3.0]), 0.9) == pytest.approx(2.0)
    # 0.9 * 2 + 0.1 * 4 = 2.2
    assert update_moving_average(2.0, torch.tensor([4.0, 4.0]), 0.9) == pytest.approx(2.2)


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_k1(logp, ref).item() == pytest.approx(math.log(2))
    assert kl_k2(logp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)
    # r = log(0.25/0.5) = -log 2; exp(r) - 1 - r = 0.5 - 1 + log 2
    assert kl_k3(logp, ref).item() == pytest.approx(-0.5 + math.log(2))


def test_exact_kl_by_hand():
    p, q = torch.tensor([[[0.5, 0.5]]]), torch.tensor([[[0.25, 0.75]]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_exact(p.log(), q.log()).item() == pytest.approx(expected, abs=1e-6)
    assert kl_exact(p.log(), p.log()).item() == pytest.approx(0.0, abs=1e-7)


def test_k1_and_k3_are_unbiased_for_the_exact_kl():
    torch.manual_seed(0)
    logits, ref_logits = torch.randn(6), torch.randn(6)
    exact = kl_exact(logits, ref_logits).item()
    tokens = torch.multinomial(logits.softmax(-1), 200_000, replacement=True)
    logp, ref = logits.log_softmax(-1)[tokens], ref_logits.log_softmax(-1)[tokens]
    assert kl_k1(logp, ref).mean().item() == pytest.approx(exact, abs=0.01)
    assert kl_k3(logp, ref).mean().item() == pytest.approx(exact, abs=0.01)


def test_sequence_kl_sums_masked_tokens():
    per_token = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(sequence_kl(per_token, mask), torch.tensor([0.3, 1.0]))


def test_clipped_surrogate_by_hand():
    old = torch.zeros(2, 1)
    logp = torch.log(torch.tensor([[1.5], [0.5]]))
    adv = torch.tensor([1.0, -1.0])
    loss = clipped_surrogate(logp, old, adv, clip_eps=0.2)
    # row 0: -min(1.5 * 1, 1.2 * 1) = -1.2; row 1: -min(0.5 * -1, 0.8 * -1) = 0.8
    torch.testing.assert_close(loss, torch.tensor([[-1.2], [0.8]]))


def test_surrogate_gradient_is_reinforce_on_fresh_samples():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss = clipped_surrogate(logp, logp.detach(), torch.tensor([3.0]), 0.2).sum()
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-3.0, -3.0]]))


def test_aggregations_by_hand():
    per_token = torch.tensor([[1.0, 3.0, 100.0], [2.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert seq_mean(per_token, mask).item() == pytest.approx((2.0 + 2.0) / 2)
    assert token_mean(per_token, mask).item() == pytest.approx(6.0 / 3)
    assert seq_sum(per_token, mask).item() == pytest.approx((4.0 + 2.0) / 2)


def test_token_logprobs_and_entropy_match_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    tokens = torch.randint(0, 11, (3, 5))
    full = logits.log_softmax(-1)
    torch.testing.assert_close(token_logprobs(logits, tokens), full.gather(-1, tokens[..., None]).squeeze(-1))
    torch.testing.assert_close(token_entropy(logits), -(full.exp() * full).sum(-1))


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top2 = filter_logits(logits, top_k=2, top_p=1.0)
    assert torch.isinf(top2[0, 2:]).all() and torch.isfinite(top2[0, :2]).all()
    # nucleus 0.7: 0.5 alone < 0.7, 0.5 + 0.3 >= 0.7 -> keep the first two
    nucleus = filter_logits(logits, top_k=0, top_p=0.7)
    assert torch.isfinite(nucleus[0, :2]).all() and torch.isinf(nucleus[0, 2:]).all()
    assert torch.equal(filter_logits(logits, 0, 1.0), logits)


def test_learning_rate_schedule_by_hand():
    from langrl.run.optim import lr_factor

    # warm-up over 2 steps, then linear decay over the remaining 4 steps (+1 so the last step moves)
    linear = [lr_factor(s, 6, 2, "linear") for s in range(1, 7)]
    assert linear == pytest.approx([0.5, 1.0, 0.8, 0.6, 0.4, 0.2])
    assert [lr_factor(s, 3, 0, "constant") for s in range(1, 4)] == [1.0, 1.0, 1.0]
    # cosine: 0.5 (1 + cos(pi * k / 4)) for k = 1..3
    expected = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(1, 4)]
    assert [lr_factor(s, 3, 0, "cosine") for s in range(1, 4)] == pytest.approx(expected)
