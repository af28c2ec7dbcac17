"""langrl.bayes: exact posterior, best-of-n and importance-sampling estimators vs hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from langrl.bayes import (
    FrontierPoint,
    best_of_n_kl,
    best_of_n_kl_bound,
    best_of_n_logp,
    compare_to_optimum,
    effective_sample_fraction,
    effective_sample_size,
    empirical_best_of_n_reward,
    enumerate_sequences,
    expected,
    kl,
    kl_pi_to_opt_from_policy,
    log_partition,
    log_z_from_policy,
    log_z_from_reference,
    optimal_frontier,
    posterior_logp,
    sample_best_of_n,
    self_normalised_kl_opt_to_pi,
    total_variation,
    unbiased_best_of_n_reward,
)

# pi0 = (1/2, 1/3, 1/6) with rewards (0, 1, 2): the running hand-computed example.
REF = torch.tensor([1 / 2, 1 / 3, 1 / 6], dtype=torch.float64).log()
REWARDS = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)


def _random_logp(n: int, gen: torch.Generator, scale: float = 2.0) -> torch.Tensor:
    return (scale * torch.randn(n, generator=gen, dtype=torch.float64)).log_softmax(0)


# ---------------------------------------------------------------- exact


def test_log_partition_by_hand() -> None:
    # Z = 1/2 e^0 + 1/3 e^1 + 1/6 e^2 = 0.5 + 0.9060939 + 1.2315094 = 2.6376033, log Z = 0.969871
    by_hand = math.log(0.5 + math.e / 3 + math.e**2 / 6)
    assert log_partition(REF, REWARDS, 1.0) == pytest.approx(by_hand, abs=1e-12)
    assert log_partition(REF, REWARDS, 1.0) == pytest.approx(0.969871, abs=1e-6)
    # beta = 2: Z = 1/2 + e^0.5 / 3 + e / 6
    by_hand_2 = math.log(0.5 + math.e**0.5 / 3 + math.e / 6)
    assert log_partition(REF, REWARDS, 2.0) == pytest.approx(by_hand_2, abs=1e-12)


def test_posterior_by_hand() -> None:
    z = 0.5 + math.e / 3 + math.e**2 / 6
    expected_p = torch.tensor([0.5 / z, math.e / 3 / z, math.e**2 / 6 / z], dtype=torch.float64)
    post = posterior_logp(REF, REWARDS, 1.0)
    assert post.dtype == torch.float64
    torch.testing.assert_close(post.exp(), expected_p, rtol=0, atol=1e-12)
    # Large rewards / tiny beta stay finite in log space (no exp overflow): pi* -> argmax.
    post_cold = posterior_logp(REF, REWARDS * 1000, 1e-3)
    assert torch.isfinite(post_cold[2]) and post_cold[2] == pytest.approx(0.0, abs=1e-12)


def test_kl_tv_expected_by_hand_and_zeros() -> None:
    half = torch.tensor([0.5, 0.5], dtype=torch.float64).log()
    point = torch.tensor([1.0, 0.0], dtype=torch.float64).log()  # (0, -inf)
    assert kl(point, half) == pytest.approx(math.log(2), abs=1e-12)  # 0 log 0 = 0
    assert kl(half, point) == math.inf  # mass where the other has none
    assert kl(point, point) == 0.0
    assert kl(half, half) == 0.0
    assert total_variation(point, half) == pytest.approx(0.5, abs=1e-12)
    assert expected(point, torch.tensor([3.0, 100.0])) == pytest.approx(3.0)
    assert expected(REF, REWARDS) == pytest.approx(1 / 3 + 2 / 6)


def test_identity_kl_to_optimum_on_random_distributions() -> None:
    """KL(pi || pi*) = KL(pi || pi0) - E_pi[r] / beta + log Z, for any pi."""
    gen = torch.Generator().manual_seed(0)
    for beta in (0.1, 0.5, 1.0, 3.0):
        for _ in range(5):
            pi, ref = _random_logp(50, gen), _random_logp(50, gen)
            rewards = torch.randn(50, generator=gen, dtype=torch.float64)
            lhs = kl(pi, posterior_logp(ref, rewards, beta))
            rhs = kl(pi, ref) - expected(pi, rewards) / beta + log_partition(ref, rewards, beta)
            assert lhs == pytest.approx(rhs, abs=1e-10)
            report = compare_to_optimum(pi, ref, rewards, beta)
            assert report.kl_pi_to_opt == pytest.approx(lhs, abs=1e-12)
            # J(pi) = beta log Z - beta KL(pi || pi*)
            gap = beta * report.kl_pi_to_opt
            assert report.objective_pi == pytest.approx(report.objective_opt - gap, abs=1e-9)
            assert report.kl_opt_to_ref == pytest.approx(report.reward_opt / beta - report.log_z, abs=1e-10)


def test_optimum_maximises_objective() -> None:
    gen = torch.Generator().manual_seed(1)
    ref = _random_logp(20, gen)
    rewards = torch.rand(20, generator=gen, dtype=torch.float64)
    beta = 0.3
    opt = posterior_logp(ref, rewards, beta)
    at_opt = compare_to_optimum(opt, ref, rewards, beta)
    assert at_opt.objective_opt == pytest.approx(beta * log_partition(ref, rewards, beta), abs=1e-12)
    assert at_opt.objective_pi == pytest.approx(at_opt.objective_opt, abs=1e-10)
    assert at_opt.kl_pi_to_opt == pytest.approx(0.0, abs=1e-12) and at_opt.tv == pytest.approx(0.0, abs=1e-12)
    for scale in (1e-3, 1e-2, 0.1, 1.0):
        for _ in range(5):
            perturbed = (opt + scale * torch.randn(20, generator=gen, dtype=torch.float64)).log_softmax(0)
            assert compare_to_optimum(perturbed, ref, rewards, beta).objective_pi < at_opt.objective_opt
    for baseline in (ref, (rewards / 1e-3 + ref).log_softmax(0)):  # the prior, and a near-greedy policy
        assert compare_to_optimum(baseline, ref, rewards, beta).objective_pi < at_opt.objective_opt


def test_compare_on_enumerated_token_space() -> None:
    """pi0 = a bigram model over V = 3 tokens, length 4; reward = number of token 2."""
    seqs = enumerate_sequences(3, 4)
    first = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    bigram = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]], dtype=torch.float64).log()
    ref = first[seqs[:, 0]] + bigram[seqs[:, :-1], seqs[:, 1:]].sum(1)
    rewards = (seqs == 2).sum(1).double()
    report = compare_to_optimum(ref, ref, rewards, 1.0)  # the untrained policy
    assert report.kl_pi_to_ref == 0.0 and report.objective_pi == pytest.approx(report.reward_pi)
    assert report.kl_pi_to_opt == pytest.approx(report.log_z - report.reward_pi, abs=1e-12)
    assert report.reward_opt > report.reward_pi
    metrics = report.as_metrics()
    assert metrics["bayes/log_z"] == report.log_z and len(metrics) == 11


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="normalised"):
        compare_to_optimum(REF + 0.1, REF, REWARDS, 1.0)
    with pytest.raises(ValueError, match="beta"):
        log_partition(REF, REWARDS, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        kl(REF, REF[:2])
    with pytest.raises(ValueError, match="finite"):
        log_partition(REF, torch.tensor([0.0, math.inf, 1.0]), 1.0)


def test_enumerate_sequences() -> None:
    seqs = enumerate_sequences(3, 4)
    assert seqs.shape == (81, 4) and seqs.dtype == torch.long
    assert len({tuple(row) for row in seqs.tolist()}) == 81
    assert seqs[0].tolist() == [0, 0, 0, 0] and seqs[1].tolist() == [0, 0, 0, 1]
    assert seqs[-1].tolist() == [2, 2, 2, 2]
    assert enumerate_sequences(2, 17).shape == (2**17, 17)  # the limit itself is allowed
    with pytest.raises(ValueError, match=r"262,144.*smaller vocab_size or length"):
        enumerate_sequences(2, 18)
    with pytest.raises(ValueError, match="vocab_size=49152"):
        enumerate_sequences(49152, 2)


def test_frontier_is_monotone() -> None:
    gen = torch.Generator().manual_seed(2)
    ref = _random_logp(30, gen)
    rewards = torch.randn(30, generator=gen, dtype=torch.float64)
    betas = [10.0, 3.0, 1.0, 0.3, 0.1, 0.03]  # decreasing beta
    frontier = optimal_frontier(ref, rewards, betas)
    assert [p.beta for p in frontier] == betas and isinstance(frontier[0], FrontierPoint)
    kls = [p.kl_opt_to_ref for p in frontier]
    gains = [p.reward_opt for p in frontier]
    assert all(a < b for a, b in zip(kls, kls[1:], strict=False))
    assert all(a < b for a, b in zip(gains, gains[1:], strict=False))
    assert gains[0] > expected(ref, rewards) and gains[-1] <= float(rewards.max())
    beta, kl_opt, reward_opt = frontier[2]  # plain tuple unpacking works
    assert kl_opt == pytest.approx(reward_opt / beta - log_partition(ref, rewards, beta), abs=1e-10)


# ---------------------------------------------------------------- best-of-n


def test_best_of_n_by_hand() -> None:
    # F(0) = 1/2, F(1) = 5/6, F(2) = 1. n = 2: (1/4, 25/36 - 9/36, 1 - 25/36) = (1/4, 4/9, 11/36).
    torch.testing.assert_close(
        best_of_n_logp(REF, REWARDS, 2).exp(), torch.tensor([1 / 4, 4 / 9, 11 / 36], dtype=torch.float64)
    )
    by_hand = 0.25 * math.log(0.5) + 4 / 9 * math.log(4 / 3) + 11 / 36 * math.log(11 / 6)
    assert best_of_n_kl(REF, REWARDS, 2) == pytest.approx(by_hand, abs=1e-12)
    assert round(best_of_n_kl(REF, REWARDS, 2), 3) == 0.140
    assert round(best_of_n_kl(REF, REWARDS, 4), 3) == 0.554
    assert round(best_of_n_kl(REF, REWARDS, 16), 3) == 1.544
    assert best_of_n_kl(REF, REWARDS, 1) == pytest.approx(0.0, abs=1e-15)
    for n in (2, 4, 16):
        assert best_of_n_kl(REF, REWARDS, n) < best_of_n_kl_bound(n)


def test_best_of_n_distinct_rewards_match_bound() -> None:
    gen = torch.Generator().manual_seed(3)
    ref = (0.1 * torch.randn(1000, generator=gen, dtype=torch.float64)).log_softmax(0)  # uniform-ish
    rewards = torch.randperm(1000, generator=gen).double()  # all distinct
    assert best_of_n_kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    assert best_of_n_kl(ref, rewards, 4) == pytest.approx(best_of_n_kl_bound(4), abs=1e-2)
    assert best_of_n_kl_bound(1) == 0.0


def test_best_of_n_ties() -> None:
    assert best_of_n_kl(REF, torch.zeros(3), 8) == pytest.approx(0.0, abs=1e-15)  # all tied: pi_bon = pi0
    torch.testing.assert_close(best_of_n_logp(REF, torch.zeros(3), 8), REF)
    # pi0 = (1/2, 1/4, 1/4), rewards (0, 1, 1), n = 2: top level gets 1 - (1/2)^2 = 3/4, split 1:1.
    ref = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).log()
    probs = best_of_n_logp(ref, torch.tensor([0.0, 1.0, 1.0]), 2).exp()
    torch.testing.assert_close(probs, torch.tensor([0.25, 0.375, 0.375], dtype=torch.float64))
    # Zero-probability outcomes stay at zero even when they have the best reward.
    ref0 = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64).log()
    probs0 = best_of_n_logp(ref0, torch.tensor([0.0, 1.0, 5.0]), 3).exp()
    torch.testing.assert_close(probs0, torch.tensor([0.125, 0.875, 0.0], dtype=torch.float64))


def test_sample_best_of_n_matches_exact_distribution() -> None:
    assert int(sample_best_of_n(torch.tensor([1.0, 3.0, 3.0, 2.0]))) == 1  # first of the tied best
    assert sample_best_of_n(torch.tensor([[2.0, 2.0], [0.0, 1.0]])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="NaN"):
        sample_best_of_n(torch.tensor([1.0, math.nan]))
    # Monte Carlo with ties: pi0 = (0.4, 0.3, 0.2, 0.1), rewards (1, 0, 1, 2), n = 3.
    gen = torch.Generator().manual_seed(4)
    ref_p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    rewards = torch.tensor([1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    draws = torch.multinomial(ref_p, 3 * 40_000, replacement=True, generator=gen).view(40_000, 3)
    kept = draws.gather(1, sample_best_of_n(rewards[draws]).unsqueeze(1)).squeeze(1)
    empirical = torch.bincount(kept, minlength=4).double() / 40_000
    torch.testing.assert_close(empirical, best_of_n_logp(ref_p.log(), rewards, 3).exp(), rtol=0, atol=0.01)


# ---------------------------------------------------------------- estimators


def test_estimators_converge_to_exact() -> None:
    gen = torch.Generator().manual_seed(5)
    ref = _random_logp(12, gen, scale=1.0)
    pi = _random_logp(12, gen, scale=1.0)
    rewards = torch.rand(12, generator=gen, dtype=torch.float64) * 2
    beta = 0.7
    exact_report = compare_to_optimum(pi, ref, rewards, beta)
    m = 200_000
    from_ref = torch.multinomial(ref.exp(), m, replacement=True, generator=gen)
    assert log_z_from_reference(rewards[from_ref], beta) == pytest.approx(exact_report.log_z, abs=0.02)
    from_pi = torch.multinomial(pi.exp(), m, replacement=True, generator=gen)
    args = (pi[from_pi], ref[from_pi], rewards[from_pi], beta)
    assert log_z_from_policy(*args) == pytest.approx(exact_report.log_z, abs=0.02)
    assert kl_pi_to_opt_from_policy(*args) == pytest.approx(exact_report.kl_pi_to_opt, abs=0.02)
    assert self_normalised_kl_opt_to_pi(*args) == pytest.approx(exact_report.kl_opt_to_pi, abs=0.02)


def test_estimators_at_the_optimum_are_exact() -> None:
    """Sampling from pi = pi* makes every weight equal to Z: zero-variance estimates, ESS = M."""
    opt = posterior_logp(REF, REWARDS, 0.5)
    idx = torch.tensor([0, 1, 2, 2, 1, 2])
    args = (opt[idx], REF[idx], REWARDS[idx], 0.5)
    log_z = log_partition(REF, REWARDS, 0.5)
    assert log_z_from_policy(*args) == pytest.approx(log_z, abs=1e-12)
    assert kl_pi_to_opt_from_policy(*args) == pytest.approx(0.0, abs=1e-12)
    assert self_normalised_kl_opt_to_pi(*args) == pytest.approx(0.0, abs=1e-12)


def test_effective_sample_size() -> None:
    assert effective_sample_size(torch.zeros(100)) == pytest.approx(100.0)
    assert effective_sample_size(torch.full((100,), -37.5)) == pytest.approx(100.0)  # scale-invariant
    assert effective_sample_fraction(torch.zeros(100)) == pytest.approx(1.0)
    dominant = torch.tensor([0.0] + [-1000.0] * 99)
    assert effective_sample_size(dominant) == pytest.approx(1.0)
    assert effective_sample_fraction(dominant) == pytest.approx(0.01)
    # Two weights 1 and 3: (1 + 3)^2 / (1 + 9) = 1.6
    assert effective_sample_size(torch.tensor([0.0, math.log(3)])) == pytest.approx(1.6)


def test_unbiased_best_of_n_reward_is_the_mean_over_all_subsets() -> None:
    import itertools

    rewards = torch.tensor([0.3, -0.2, 0.9, 0.0, 0.5, 0.5, -0.7])
    for n in range(1, len(rewards) + 1):
        subsets = list(itertools.combinations(rewards.tolist(), n))
        by_hand = sum(max(s) for s in subsets) / len(subsets)
        assert unbiased_best_of_n_reward(rewards, n) == pytest.approx(by_hand, abs=1e-6)
    with pytest.raises(ValueError, match="at least 8 samples"):
        unbiased_best_of_n_reward(rewards, 8)


def test_unbiased_best_of_n_beats_the_plug_in_near_m() -> None:
    """Over many draws of M = 4 normals, the U-statistic averages to E[max of 4] = 1.0294; the plug-in is low."""
    g = torch.Generator().manual_seed(0)
    draws = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    unbiased = sum(unbiased_best_of_n_reward(d, 4) for d in draws[:4000]) / 4000
    plug_in = sum(empirical_best_of_n_reward(d, 4) for d in draws[:4000]) / 4000
    assert unbiased == pytest.approx(1.0294, abs=0.03)
    assert plug_in < 0.95
