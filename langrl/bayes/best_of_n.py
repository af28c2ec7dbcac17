"""Best-of-n sampling: draw n completions iid from pi0, keep the one with the highest reward.

Its exact distribution on an enumerable space, its exact KL from pi0, and the usual analytic formula.
Let F(r) = P_pi0(R <= r) and F(r-) = P_pi0(R < r). The best of n has reward level r with probability

    P(max = r) = F(r)^n - F(r-)^n,

and within a level (outcomes tied at reward r) the kept draw is distributed as pi0 restricted to that
level, so outcome y with reward r(y) gets

    pi_bon(y) = (F(r(y))^n - F(r(y)-)^n) * pi0(y) / P_pi0(R = r(y)).

With all rewards distinct this is the formula of Beirami et al. 2024 ("Theoretical guarantees on the
best-of-n alignment policy"), whose KL(pi_bon || pi0) is at most log n - (n - 1) / n, the value
Stiennon et al. 2020 give, approached as the largest single-outcome probability goes to 0. Ties lower the
KL further (all rewards equal: pi_bon = pi0).
"""

from __future__ import annotations

import math

import torch

from langrl.bayes._checks import as_f64, check_normalised, same_shape
from langrl.bayes.exact import kl

# The n of the best-of-n curves drawn in reports (exact on toy tasks, else from pi0's samples).
BEST_OF_N = (1, 2, 4, 8, 16, 32, 64)


def _check_n(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n (the number of candidates) must be an integer >= 1, got {n!r}")
    return int(n)


def best_of_n_logp(ref_logp: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """(N,), (N,), n -> (N,) float64 log pi_bon(y), the exact best-of-n distribution (ties handled).

    ``ref_logp`` must be normalised over the N outcomes (checked to 1e-4). Ties are exact float equality
    of rewards; round the rewards first if near-equal values should count as ties.
    """
    ref_logp, rewards = as_f64(ref_logp, "ref_logp", logp=True), as_f64(rewards, "rewards")
    same_shape(ref_logp=ref_logp, rewards=rewards)
    check_normalised(ref_logp, "ref_logp")
    n = _check_n(n)
    ref_logp = ref_logp - torch.logsumexp(ref_logp, 0)  # exact normalisation so that F(max r) = 1

    # Distinct reward levels in increasing order; level[i] is the level of outcome i.
    levels, level = torch.unique(rewards, sorted=True, return_inverse=True)
    level_logmass = _scatter_logsumexp(ref_logp, level, levels.numel())  # log P(R = r)
    log_cdf = torch.logcumsumexp(level_logmass, 0)  # log F(r)
    log_cdf_below = torch.cat([log_cdf.new_full((1,), -math.inf), log_cdf[:-1]])  # log F(r-)

    # log(F^n - F_-^n) = n log F + log(1 - (F_- / F)^n), computed as log(-expm1(.)) to keep precision
    # when F_- is close to F (a light level near the top of a heavy distribution).
    has_mass = level_logmass > -math.inf
    gap = torch.where(has_mass, log_cdf_below - log_cdf, torch.full_like(log_cdf, -math.inf))
    level_logq = torch.where(
        has_mass, n * log_cdf + torch.log(-torch.expm1(n * gap)), torch.full_like(log_cdf, -math.inf)
    )

    # Share each level's probability among its outcomes in proportion to pi0.
    share = ref_logp - level_logmass[level]
    out = level_logq[level] + share
    return torch.where(ref_logp > -math.inf, out, torch.full_like(out, -math.inf))


def _scatter_logsumexp(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """(N,), (N,) long in [0, size) -> (size,): log sum_{i: index[i] = k} exp(values[i]); -inf if empty."""
    finite = values > -math.inf
    top = torch.full((size,), -math.inf, dtype=values.dtype).scatter_reduce(
        0, index, values, reduce="amax", include_self=True
    )
    safe_top = torch.where(top > -math.inf, top, torch.zeros_like(top))
    summed = torch.zeros(size, dtype=values.dtype).index_add(
        0, index, torch.where(finite, (values - safe_top[index]).exp(), torch.zeros_like(values))
    )
    return torch.where(top > -math.inf, safe_top + summed.log(), top)


def best_of_n_kl(ref_logp: torch.Tensor, rewards: torch.Tensor, n: int) -> float:
    """(N,), (N,), n -> exact KL(pi_bon || pi0) in nats = sum_y pi_bon(y) log(pi_bon(y) / pi0(y))."""
    ref_logp = as_f64(ref_logp, "ref_logp", logp=True)
    # Compare with the renormalised pi0 that best_of_n_logp used, so that n = 1 gives exactly 0.
    return kl(best_of_n_logp(ref_logp, rewards, n), ref_logp - torch.logsumexp(ref_logp, 0))


def best_of_n_kl_bound(n: int) -> float:
    """KL(pi_bon || pi0) <= log n - (n - 1) / n (Stiennon et al. 2020; Beirami et al. 2024).

    Reached in the limit of many distinct rewards, each of small pi0 probability (continuous rewards).
    """
    n = _check_n(n)
    return math.log(n) - (n - 1) / n


def sample_best_of_n(rewards: torch.Tensor) -> torch.Tensor:
    """(..., n) rewards of n candidates -> (...) LongTensor: index of the best, ties to the first occurrence.

    For a single group of shape (n,) the result is a 0-d tensor; ``int(...)`` gives the index.
    Keeping the first of tied iid draws selects within the tied level in proportion to pi0, as
    ``best_of_n_logp`` assumes.
    """
    if rewards.dim() == 0 or rewards.size(-1) == 0:
        raise ValueError(f"rewards must have shape (..., n) with n >= 1, got {tuple(rewards.shape)}")
    if torch.isnan(rewards).any():
        raise ValueError("rewards contain NaN; the best candidate is undefined")
    is_best = rewards == rewards.amax(-1, keepdim=True)
    position = torch.arange(rewards.size(-1), device=rewards.device).expand_as(rewards)
    # Explicit first-occurrence rule rather than relying on argmax's tie behaviour.
    return torch.where(is_best, position, rewards.size(-1)).amin(-1)


def empirical_best_of_n_reward(rewards: torch.Tensor, n: int) -> float:
    """(M,) rewards of samples from pi0 -> E[max of n draws] under their empirical distribution.

    With the rewards sorted, r_(1) <= ... <= r_(M), the maximum of n draws with replacement is r_(k) with
    probability (k/M)^n - ((k-1)/M)^n. A plug-in estimate (biased low for n near M, since the empirical
    distribution has no tail beyond the largest sample); pair it with ``best_of_n_kl_bound(n)``.
    """
    n = _check_n(n)
    ordered = torch.sort(torch.as_tensor(rewards, dtype=torch.float64).reshape(-1)).values
    m = ordered.numel()
    if m == 0:
        raise ValueError("empirical_best_of_n_reward needs at least one reward")
    k = torch.arange(1, m + 1, dtype=torch.float64)
    weights = (k / m) ** n - ((k - 1) / m) ** n
    return float((weights * ordered).sum())


def unbiased_best_of_n_reward(rewards: torch.Tensor, n: int) -> float:
    """(M,) rewards of M >= n iid samples from pi0 -> the unbiased estimate of E[max of n draws from pi0].

    The mean of the maximum over all C(M, n) subsets of the samples (a U-statistic): with the rewards sorted,
    r_(1) <= ... <= r_(M), the maximum of a subset is r_(k) for C(k - 1, n - 1) of them. Unlike the plug-in
    ``empirical_best_of_n_reward`` it is not biased low for n near M, but needs n <= M.
    """
    n = _check_n(n)
    ordered = torch.sort(torch.as_tensor(rewards, dtype=torch.float64).reshape(-1)).values
    m = ordered.numel()
    if n > m:
        raise ValueError(f"the unbiased best-of-{n} estimate needs at least {n} samples, got {m}")
    k = torch.arange(1, m + 1, dtype=torch.float64)
    # C(k - 1, n - 1) / C(m, n) through log-gamma, so that large M does not overflow
    log_count = torch.lgamma(k) - torch.lgamma(torch.tensor(float(n))) - torch.lgamma(k - n + 1)
    log_total = math.lgamma(m + 1) - math.lgamma(n + 1) - math.lgamma(m - n + 1)
    weights = torch.where(k >= n, (log_count - log_total).exp(), torch.zeros_like(k))
    return float((weights * ordered).sum())
