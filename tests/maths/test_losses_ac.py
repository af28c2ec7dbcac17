"""Tier 1: GAE, value loss, KL control and distribution matching (DPG) against hand-computed values."""

import math

import pytest
import torch

from langrl.rl.dpg import dpg_loss, dpg_weights, estimate_kl_target_to, log_target
from langrl.rl.kl_control import AdaptiveKLController, FixedKLController, per_token_kl_rewards
from langrl.rl.returns import gae, token_discounts, whiten
from langrl.rl.value import clipped_value_loss


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------- GAE


def test_gae_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    mask = torch.ones(1, 3)
    adv, ret = gae(rewards, values, token_discounts(mask, 0.9), lam=0.8, mask=mask)
    # gamma lam = 0.72; the last token ends the episode (discount 0)
    # delta_2 = 2 + 0.9 * 0   - 1.5 = 0.5     A_2 = 0.5
    # delta_1 = 0 + 0.9 * 1.5 - 1.0 = 0.35    A_1 = 0.35 + 0.72 * 0.5  = 0.71
    # delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4     A_0 = 1.4  + 0.72 * 0.71 = 1.9112
    # returns = A + V = (2.4112, 1.71, 2.0)
    close(adv, [[1.9112, 0.71, 0.5]])
    close(ret, [[2.4112, 1.71, 2.0]])


def test_token_discounts_end_each_row_at_its_last_token():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    close(token_discounts(mask, 0.5), [[0.5, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_gae_masked_tail_is_zero_and_padding_may_hold_nan():
    rewards = torch.tensor([[1.0, 2.0, 99.0, 99.0]])
    values = torch.tensor([[0.5, 1.0, 77.0, float("nan")]])  # padding may hold anything
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    adv, ret = gae(rewards, values, token_discounts(mask, 0.9), lam=0.8, mask=mask)
    # delta_1 = 2 + 0 - 1 = 1                       A_1 = 1
    # delta_0 = 1 + 0.9 * 1 - 0.5 = 1.4             A_0 = 1.4 + 0.72 * 1 = 2.12
    close(adv, [[2.12, 1.0, 0.0, 0.0]])
    close(ret, [[2.62, 2.0, 0.0, 0.0]])


def test_gae_truncated_rows_bootstrap_from_the_next_state():
    rewards, values = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 1.0]])
    adv, ret = gae(rewards, values, torch.full((1, 2), 0.9), lam=0.8, bootstrap=torch.tensor([3.0]))
    # delta_1 = 2 + 0.9 * 3 - 1 = 3.7   A_1 = 3.7;  delta_0 = 1 + 0.9 - 0.5 = 1.4   A_0 = 1.4 + 0.72 * 3.7
    close(adv, [[4.064, 3.7]])
    close(ret, [[4.564, 4.7]])


def test_gae_over_env_steps_does_not_flow_across_episode_ends():
    # one env, 3 steps; the episode ends at step 1 and a new one starts at step 2; gamma 0.5, lam 0.5
    rewards, values = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.5, 1.0, 2.0]])
    dones = torch.tensor([[0.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, 0.5 * (1 - dones), lam=0.5, bootstrap=torch.tensor([4.0]))
    d2 = 0.0 + 0.5 * 4.0 - 2.0  # bootstraps from the state after the rollout
    d1 = 2.0 - 1.0  # done: no bootstrap, nothing flows back from step 2
    d0 = 1.0 + 0.5 * 1.0 - 0.5
    close(adv, [[d0 + 0.25 * d1, d1, d2]])
    close(ret, adv + values)


def _batch(seed=0, full=False):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(3, 5, generator=g)
    values = torch.randn(3, 5, generator=g)
    last_value = torch.randn(3, generator=g)
    lengths = torch.tensor([5, 5, 5] if full else [5, 3, 1])
    mask = (torch.arange(5)[None] < lengths[:, None]).float()
    return rewards, values, mask, last_value, lengths


@pytest.mark.parametrize("bootstrap", [False, True])
def test_gae_lambda_one_is_monte_carlo_minus_values(bootstrap):
    rewards, values, mask, last_value, lengths = _batch(full=bootstrap)
    gamma = 0.95
    if bootstrap:  # truncated full-length rows: discount gamma throughout, V(s_T) = last_value
        adv, ret = gae(rewards, values, torch.full_like(rewards, gamma), 1.0, bootstrap=last_value)
    else:  # rows that end at their last valid token
        adv, ret = gae(rewards, values, token_discounts(mask, gamma), 1.0, mask=mask)
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            g_t = sum(gamma**k * rewards[b, t + k] for k in range(n - t))
            if bootstrap:
                g_t = g_t + gamma ** (n - t) * last_value[b]
            assert adv[b, t].item() == pytest.approx((g_t - values[b, t]).item(), abs=1e-5)
            assert ret[b, t].item() == pytest.approx(float(g_t), abs=1e-5)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


def test_gae_lambda_zero_is_one_step_td_error():
    rewards, values, _, last_value, lengths = _batch(1, full=True)
    gamma = 0.9
    adv, _ = gae(rewards, values, torch.full_like(rewards, gamma), 0.0, bootstrap=last_value)
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            v_next = values[b, t + 1] if t + 1 < n else last_value[b]
            delta = rewards[b, t] + gamma * v_next - values[b, t]
            assert adv[b, t].item() == pytest.approx(delta.item(), abs=1e-6)


def test_whiten_masked_entries_have_mean_zero_std_one():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 6.0, -50.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    out = whiten(x, mask)
    valid = out[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.std().item() == pytest.approx(1.0, abs=1e-6)
    assert (out[~mask.bool()] == 0).all()
    # shift_mean=False rescales about the mean and keeps it: valid entries (1, 2, 3, 4, 6), mean 3.2
    kept = whiten(x, mask, shift_mean=False)[mask.bool()]
    assert kept.mean().item() == pytest.approx(3.2, abs=1e-5)
    assert kept.std().item() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- value


def test_clipped_value_loss_hand_values():
    values = torch.tensor([[1.0, 1.0, 100.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.2, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # token 0: (1 - 1.2)^2 = 0.04; V_clip = 0 + clamp(1, -0.2, 0.2) = 0.2, (0.2 - 1.2)^2 = 1.0 -> max 1.0
    #          (clip active: the clipped error is larger)
    # token 1: (1 + 1)^2 = 4;      V_clip = 0.2, (0.2 + 1)^2 = 1.44                  -> max 4
    #          (clip inactive)
    # loss = 0.5 * (1.0 + 4) / 2 = 1.25; token 2 is masked
    loss = clipped_value_loss(values, old, returns, mask, clip=0.2)
    assert loss.item() == pytest.approx(1.25, abs=1e-6)
    loss.backward()
    # token 0: the clipped term wins and is flat in V -> no gradient; token 1: 0.5 * 2 (V - R) / 2 = 1
    close(values.grad, [[0.0, 1.0, 0.0]])
    # clip=None: 0.5 * (0.04 + 4) / 2 = 1.01
    assert clipped_value_loss(values, old, returns, mask, clip=None).item() == pytest.approx(1.01, abs=1e-6)


# ---------------------------------------------------------------------------------------------- KL control


def test_adaptive_kl_controller_moves_by_clipped_error():
    ctl = AdaptiveKLController(coef=0.1, target=6.0, horizon=10000)
    # KL 12: error = 12 / 6 - 1 = 1, clipped to 0.2
    assert ctl.update(12.0, 256) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    ctl = AdaptiveKLController(coef=0.1, target=6.0, horizon=10000)
    # KL 3: error = -0.5, clipped to -0.2
    assert ctl.update(3.0, 256) == pytest.approx(0.1 * (1 - 0.2 * 256 / 10000))
    ctl = AdaptiveKLController(coef=0.1, target=6.0, horizon=10000)
    # KL 6.6: error 0.1, inside the clip
    assert ctl.update(6.6, 256) == pytest.approx(0.1 * (1 + 0.1 * 256 / 10000))
    assert ctl.coef == pytest.approx(0.1 * (1 + 0.1 * 256 / 10000))


def test_kl_controllers_round_trip_state_and_fixed_is_constant():
    ctl = AdaptiveKLController(coef=0.1, target=6.0, horizon=10000)
    ctl.update(12.0, 256)
    resumed = AdaptiveKLController(coef=1.0, target=1.0, horizon=1)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed == ctl
    assert resumed.update(9.0, 64) == ctl.update(9.0, 64)
    fixed = FixedKLController(coef=0.05)
    assert fixed.update(100.0, 256) == 0.05 and fixed.coef == 0.05
    other = FixedKLController(coef=1.0)
    other.load_state_dict(fixed.state_dict())
    assert other == fixed


def test_per_token_kl_rewards_hand_values():
    score = torch.tensor([1.0, -2.0, 5.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.4, 9.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    rewards = per_token_kl_rewards(score, kl, mask, coef=0.5)
    # row 0: -0.5 * (0.1, 0.2, 0.3), + 1 on the last token       -> (-0.05, -0.1, 0.85)
    # row 1: -0.5 * (0.5, 0.4), + (-2) on token 1; token 2 masked -> (-0.25, -2.2, 0)
    # row 2: no valid token -> zeros, no score
    close(rewards, [[-0.05, -0.1, 0.85], [-0.25, -2.2, 0.0], [0.0, 0.0, 0.0]])


# ---------------------------------------------------------------------------------------------- DPG


def test_log_target_tilted_and_constrained():
    ref = torch.tensor([-1.0, -2.0, -3.0])
    r = torch.tensor([1.0, 0.0, 2.0])
    close(log_target(ref, r, beta=0.5, constraint=False), [1.0, -2.0, 1.0])
    constrained = log_target(ref, r, beta=None, constraint=True)
    assert constrained[0] == -1.0 and constrained[2] == -3.0 and torch.isneginf(constrained[1])
    with pytest.raises(ValueError, match="beta"):
        log_target(ref, r, beta=None, constraint=False)


def test_dpg_weights_are_normalised_ratios_with_mean_one():
    p = torch.tensor([0.2, 0.6, 0.1, 0.4])  # unnormalised target P(y_i)
    q = torch.tensor([0.1, 0.3, 0.4, 0.2])
    w = dpg_weights(p.log(), q.log())
    # P / q = (2, 2, 0.25, 2), sum 6.25 -> w = 4 * (2, 2, 0.25, 2) / 6.25 = (1.28, 1.28, 0.16, 1.28)
    close(w, [1.28, 1.28, 0.16, 1.28], atol=1e-5)
    assert w.mean().item() == pytest.approx(1.0)
    # per prompt for (P, G); a constraint nothing satisfied gives zeros, not NaN
    grouped = dpg_weights(
        torch.stack([p.log(), torch.full((4,), -math.inf)]), torch.stack([q.log(), q.log()])
    )
    close(grouped, [[1.28, 1.28, 0.16, 1.28], [0.0, 0.0, 0.0, 0.0]], atol=1e-5)


def test_dpg_loss_gradient_is_minus_w_minus_rho_over_b():
    policy_logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    proposal_logp = torch.tensor([-1.5, -2.0, -0.1])
    weights = torch.tensor([1.5, 0.5, 1.0])
    dpg_loss(policy_logp, proposal_logp, weights).backward()
    rho = torch.exp(policy_logp.detach() - proposal_logp)  # (e^0.5, 1, e^-0.4)
    close(policy_logp.grad, -(weights - rho) / 3)


def test_dpg_gradient_vanishes_when_on_policy_and_target_is_policy():
    logits = torch.randn(7, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    logp = torch.log_softmax(logits, -1)[torch.tensor([0, 3, 3, 6])]
    # q = pi = pi0 and r = 0: P = pi, so w = 1 = rho
    target = log_target(logp.detach(), torch.zeros(4), beta=1.0, constraint=False)
    w = dpg_weights(target, logp.detach())
    dpg_loss(logp, logp.detach(), w).backward()
    assert logits.grad.abs().max().item() == 0.0


def _toy():
    pi0 = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)
    r = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    q = torch.tensor([0.3, 0.2, 0.2, 0.15, 0.15], dtype=torch.float64)
    m = torch.tensor([0.1, 0.3, 0.3, 0.2, 0.1], dtype=torch.float64)
    return pi0, r, q, m


def _exact_kl(p, m):
    keep = p > 0
    return float((p[keep] * (p[keep] / m[keep]).log()).sum())


@pytest.mark.parametrize("constraint", [False, True])
def test_kl_estimate_converges_to_exact_on_toy(constraint):
    pi0, r, q, m = _toy()
    beta = 0.7
    if constraint:
        r = (r > 0.4).double()  # a = (0, 1, 1, 0, 1)
        unnorm = pi0 * r
    else:
        unnorm = pi0 * torch.exp(r / beta)
    pi_star = unnorm / unnorm.sum()
    y = torch.multinomial(q, 100_000, replacement=True, generator=torch.Generator().manual_seed(0))
    lt = log_target(pi0.log()[y], r[y], beta=beta, constraint=constraint)
    estimate = estimate_kl_target_to(lt, q.log()[y], m.log()[y])
    assert estimate == pytest.approx(_exact_kl(pi_star, m), abs=0.02)
    # KL(pi* || q) with m = q, used to decide when to swap the proposal
    assert estimate_kl_target_to(lt, q.log()[y], q.log()[y]) == pytest.approx(_exact_kl(pi_star, q), abs=0.02)


def test_dpg_moves_a_tabular_policy_to_the_target():
    pi0, r, _, _ = _toy()
    beta = 0.7
    pi_star = pi0 * torch.exp(r / beta)
    pi_star = (pi_star / pi_star.sum()).float()
    logits = pi0.log().float().clone().requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=0.5)
    g = torch.Generator().manual_seed(0)
    start = _exact_kl(pi_star.double(), torch.softmax(logits.detach(), -1).double())
    for _ in range(200):
        logp_all = torch.log_softmax(logits, -1)
        y = torch.multinomial(logp_all.detach().exp(), 256, replacement=True, generator=g)
        proposal = logp_all.detach()[y]  # on-policy: q = pi
        w = dpg_weights(log_target(pi0.log().float()[y], r.float()[y], beta, False), proposal)
        opt.zero_grad()
        dpg_loss(logp_all[y], proposal, w).backward()
        opt.step()
    end = _exact_kl(pi_star.double(), torch.softmax(logits.detach(), -1).double())
    assert start > 0.1 and end < 0.01
