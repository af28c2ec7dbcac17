"""Tier 1: ILQL's losses, the expectile, and the offline baselines' weights against hand-computed values."""

import math

import pytest
import torch

from langrl.models.value import MLPValueHead, QHeads
from langrl.rl import ilql
from langrl.rl.returns import token_discounts


def test_expectile_loss_weighs_under_and_over_predictions():
    diff = torch.tensor([2.0, -1.0, 0.0])  # target - prediction
    assert ilql.expectile_loss(diff, 0.8).tolist() == pytest.approx([0.8 * 4, 0.2 * 1, 0.0])
    assert ilql.expectile_loss(diff, 0.5).tolist() == pytest.approx([2.0, 0.5, 0.0])  # half the squared error


def test_expectile_of_two_points_in_closed_form():
    # {0 (weight w0), 1 (weight w1)}: tau w1 (1 - v) = (1 - tau) w0 v  =>  v = tau w1 / (tau w1 + (1 - tau) w0)
    values, weights = torch.tensor([0.0, 1.0]), torch.tensor([3.0, 1.0])
    for tau in (0.5, 0.7, 0.9, 0.99, 0.999):
        assert ilql.expectile(values, weights, tau) == pytest.approx(tau / (tau + (1 - tau) * 3), abs=1e-12)
    assert ilql.expectile(values, weights, 0.5) == pytest.approx(0.25)  # the weighted mean
    assert ilql.expectile(values, weights, 1.0) == 1.0 and ilql.expectile(values, weights, 0.0) == 0.0


def test_expectile_tends_to_the_max_and_zero_weights_do_not_count():
    x = torch.tensor([0.1, 0.4, 0.9, 0.3])
    gaps = [0.9 - ilql.expectile(x, tau=tau) for tau in (0.5, 0.9, 0.99, 0.999, 0.9999)]
    assert all(a > b > 0 for a, b in zip(gaps, gaps[1:], strict=False)) and gaps[-1] < 1e-3
    w = torch.tensor([1.0, 1.0, 0.0, 1.0])  # 0.9 has no weight: the max is 0.4
    assert ilql.expectile(x, w, 0.9999) == pytest.approx(0.4, abs=1e-3)
    with pytest.raises(ValueError, match="tau"):
        ilql.expectile(x, tau=1.5)


def test_minimising_the_expectile_loss_reaches_the_expectile():
    x = torch.tensor([0.0, 0.25, 1.0, 0.5, 0.5])
    v = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([v], lr=1.0)
    for _ in range(300):
        optimizer.zero_grad()
        ilql.expectile_loss(x - v, 0.9).mean().backward()
        optimizer.step()
    assert float(v.detach()) == pytest.approx(ilql.expectile(x, tau=0.9), abs=1e-5)


def test_q_targets_bootstrap_from_the_next_state_and_stop_at_the_last_token():
    mask = torch.tensor([[1, 1, 1, 0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    v = torch.tensor([[0.2, 0.5, 0.9, 7.0]])  # 7.0 stands after the row's end: never used
    assert ilql.next_values(v).tolist()[0] == pytest.approx([0.5, 0.9, 7.0, 0.0])
    y = ilql.q_targets(rewards, token_discounts(mask, 1.0), ilql.next_values(v))
    assert y.tolist()[0][:3] == pytest.approx([0.5, 0.9, 1.0])
    y = ilql.q_targets(rewards, token_discounts(mask, 0.5), ilql.next_values(v))
    assert y.tolist()[0][:3] == pytest.approx([0.25, 0.45, 1.0])


def test_q_loss_sums_heads_and_averages_valid_tokens():
    q_taken = torch.tensor([[[1.0, 2.0]], [[0.0, 2.0]]])  # (K=2, B=1, T=2)
    targets = torch.tensor([[1.0, 1.0]])
    assert float(ilql.q_loss(q_taken, targets, torch.tensor([[1, 1]]))) == pytest.approx((0 + 1 + 1 + 1) / 2)
    assert float(ilql.q_loss(q_taken, targets, torch.tensor([[1, 0]]))) == pytest.approx((0 + 1) / 1)


def test_value_loss_is_the_expectile_loss_toward_the_detached_target():
    v = torch.tensor([[0.5, 0.5]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = ilql.value_loss(v, target, torch.tensor([[1, 1]]), 0.9)
    assert float(loss.detach()) == pytest.approx((0.9 * 0.25 + 0.1 * 0.25) / 2)
    loss.backward()
    assert target.grad is None and v.grad is not None


def test_cql_is_the_cross_entropy_of_q_toward_the_taken_token():
    q = torch.tensor([0.0, math.log(3.0)]).expand(2, 1, 1, 2)  # (K=2, B=1, T=1, A=2): softmax (1/4, 3/4)
    mask = torch.ones(1, 1)
    assert float(ilql.cql_loss(q, torch.tensor([[1]]), mask)) == pytest.approx(2 * math.log(4 / 3))
    assert float(ilql.cql_loss(q, torch.tensor([[0]]), mask)) == pytest.approx(2 * math.log(4))
    assert float(ilql.cql_loss(q, torch.tensor([[0]]), torch.zeros(1, 1))) == 0.0


def test_awac_weights_and_weighted_nll():
    adv = torch.tensor([[0.0, math.log(2.0), 5.0]])
    assert ilql.awac_weights(adv, 1.0, 20.0).tolist()[0] == pytest.approx([1.0, 2.0, 20.0])  # e^5 clipped
    assert ilql.awac_weights(adv, 0.5, 100.0).tolist()[0][:2] == pytest.approx([1.0, 4.0])
    assert ilql.awac_weights(adv, None, 20.0).tolist() == [[1.0, 1.0, 1.0]]
    logp = torch.tensor([[-1.0, -2.0]])
    assert float(ilql.weighted_nll(logp, torch.tensor([2.0]), torch.ones(1, 2))) == pytest.approx((2 + 4) / 2)
    assert float(ilql.weighted_nll(logp, torch.tensor([[1.0, 3.0]]), torch.tensor([[0, 1]]))) == pytest.approx(6.0)


def test_shaped_logits_tilt_pi_beta_by_the_advantage():
    logp = torch.log(torch.tensor([0.5, 0.5, 0.0]))
    out = ilql.shaped_logits(logp, torch.tensor([1.0, 0.0, 9.0]), torch.tensor(0.5), beta=2.0)
    assert out[:2].tolist() == pytest.approx([math.log(0.5) + 1.0, math.log(0.5) - 1.0])
    assert out[2] == -math.inf  # no mass under pi_beta, whatever Q says
    p = out.softmax(-1)
    assert float(p[0]) == pytest.approx(math.e / (math.e + 1 / math.e))
    assert torch.equal(ilql.shaped_logits(logp, torch.ones(3), torch.tensor(0.0), 0.0), logp)


def test_polyak_update():
    online, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    torch.nn.init.ones_(online.weight)
    torch.nn.init.zeros_(target.weight)
    ilql.polyak_update(target, online, 0.25)
    assert target.weight.tolist() == [[0.25, 0.25]]
    ilql.polyak_update(target, online, 1.0)
    assert torch.equal(target.weight, online.weight)


def test_filtered_bc_rows_and_rwr_weights():
    r = torch.tensor([1.0, 3.0, 2.0, 3.0])
    assert ilql.top_fraction(r, 0.25).tolist() == [False, True, False, True]  # the tie at the cut is kept
    assert ilql.top_fraction(r, 0.75).tolist() == [False, True, True, True]
    assert ilql.top_fraction(r, 1.0).all()
    w = ilql.rwr_weights(torch.tensor([0.0, math.log(2.0)]), temperature=1.0)
    assert w.tolist() == pytest.approx([2 / 3, 4 / 3])
    assert float(ilql.rwr_weights(r, 0.1).mean()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ilql.top_fraction(r, 0.0)


def test_tabular_ilql_reaches_the_exact_expectile_backup():
    # Two tokens from {0, 1}; rows (with counts): 00 -> 1 (x1), 01 -> 0 (x3), 10 -> 0.5 (x2). States: root, "0",
    # "1". Exact backup at tau: V("0") = expectile({1 w1, 0 w3}), V("1") = 0.5, Q(root, 0) = V("0"),
    # Q(root, 1) = 0.5, V(root) = expectile({Q(root, 0) w4, 0.5 w2}).
    tau = 0.9
    rows = torch.tensor([[0, 0], [0, 1], [0, 1], [0, 1], [1, 0], [1, 0]])
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5])
    state = torch.stack([torch.zeros(6, dtype=torch.long), 1 + rows[:, 0]], 1)  # 0 root, 1 "0", 2 "1"
    q = torch.zeros(2, 3, 2, requires_grad=True)  # (K, state, action)
    q_hat = torch.zeros(2, 3, 2)
    v = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.SGD([q, v], lr=1.5)  # below 2 / (2 x 4 rows / 12 tokens): no oscillation
    mask = torch.ones(6, 2)
    token_rewards = torch.stack([torch.zeros(6), rewards], 1)
    for _ in range(600):
        optimizer.zero_grad()
        q_all = q[:, state]  # (K, B, T, A)
        target = ilql.taken(q_hat[:, state], rows).min(0).values
        values = v[state]
        y = ilql.q_targets(token_rewards, token_discounts(mask, 1.0), ilql.next_values(values.detach()))
        loss = ilql.q_loss(ilql.taken(q_all, rows), y, mask) + ilql.value_loss(values, target, mask, tau)
        loss.backward()
        optimizer.step()
        q_hat.lerp_(q.detach(), 0.3)  # the Polyak update of `ilql.polyak_update`, on a plain tensor
    v0 = tau / (tau + (1 - tau) * 3)
    assert float(v[1].detach()) == pytest.approx(v0, abs=2e-3) and float(v[2].detach()) == pytest.approx(0.5, abs=2e-3)
    assert q.detach()[:, 0].reshape(-1).tolist() == pytest.approx([v0, 0.5] * 2, abs=2e-3)
    root = ilql.expectile(torch.tensor([v0, 0.5]), torch.tensor([4.0, 2.0]), tau)
    assert float(v[0].detach()) == pytest.approx(root, abs=2e-3)


def test_q_heads_start_at_zero_and_taken_matches_the_full_product():
    torch.manual_seed(0)
    emb = torch.randn(11, 8)
    heads = QHeads(8, emb, count=2)
    hidden = torch.randn(3, 5, 8)
    assert heads(hidden).shape == (2, 3, 5, 11) and float(heads(hidden).abs().max()) == 0.0
    for p in heads.parameters():
        torch.nn.init.normal_(p)
    actions = torch.randint(0, 11, (3, 5))
    assert torch.allclose(heads.taken(hidden, actions), ilql.taken(heads(hidden), actions), atol=1e-4)
    assert "embeddings" not in heads.state_dict()  # rebuilt from the base model, not checkpointed
    assert MLPValueHead(8)(hidden).shape == (3, 5)
