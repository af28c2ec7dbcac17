"""Exact KL-regularised optimum on enumerable spaces, in log space and float64.

Maximising ``J(pi) = E_pi[r] - beta KL(pi || pi0)`` has the closed-form optimum

    pi*(y) = pi0(y) exp(r(y) / beta) / Z,        Z = sum_y pi0(y) exp(r(y) / beta) = E_pi0[exp(r / beta)],

the Bayesian posterior of the prior pi0 under the evidence exp(r / beta), and for every pi

    J(pi) = beta log Z - beta KL(pi || pi*),  i.e.  KL(pi || pi*) = KL(pi || pi0) - E_pi[r] / beta + log Z.

So ``beta log Z`` is the best achievable objective and ``KL(pi || pi*)`` is exactly how far a policy falls
short of it (Korbak, Perez & Buckley 2022, "RL with KL penalties is better viewed as Bayesian inference").

Every distribution here is a (N,) tensor of log-probabilities over the same N enumerated outcomes (for a
prompt x, the N possible completions); -inf marks probability zero. Results are Python floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch

from langrl.bayes._checks import as_f64, check_beta, check_normalised, same_shape

MAX_ENUMERATED = 2**17


def enumerate_sequences(vocab_size: int, length: int) -> torch.Tensor:
    """All V^L token sequences in lexicographic order: -> LongTensor (N, L), N = V^L.

    Row i spells i in base V (most significant token first). Raises ValueError when N > 2**17: exact
    posteriors are for toy spaces only; use a smaller vocabulary or shorter sequences, or the
    importance-sampling estimators in ``langrl.bayes.estimators``.
    """
    if vocab_size < 1 or length < 0:
        raise ValueError(f"need vocab_size >= 1 and length >= 0, got {vocab_size=}, {length=}")
    n = vocab_size**length
    if n > MAX_ENUMERATED:
        raise ValueError(
            f"enumerating vocab_size={vocab_size} ** length={length} = {n:,} sequences exceeds the limit of "
            f"{MAX_ENUMERATED:,} (2**17); use a smaller vocab_size or length, or estimate by importance "
            f"sampling (langrl.bayes.estimators)"
        )
    index = torch.arange(n, dtype=torch.long).unsqueeze(1)  # (N, 1)
    place = vocab_size ** torch.arange(length - 1, -1, -1, dtype=torch.long)  # (L,) V^(L-1) ... V^0
    return (index // place) % vocab_size


def log_partition(ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> float:
    """(N,), (N,) -> log Z = log sum_y exp(log pi0(y) + r(y) / beta)."""
    ref_logp, rewards = as_f64(ref_logp, "ref_logp", logp=True), as_f64(rewards, "rewards")
    same_shape(ref_logp=ref_logp, rewards=rewards)
    return float(torch.logsumexp(ref_logp + rewards / check_beta(beta), 0))


def posterior_logp(ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """(N,), (N,) -> (N,) float64: log pi*(y) = log pi0(y) + r(y) / beta - log Z."""
    ref_logp, rewards = as_f64(ref_logp, "ref_logp", logp=True), as_f64(rewards, "rewards")
    same_shape(ref_logp=ref_logp, rewards=rewards)
    unnormalised = ref_logp + rewards / check_beta(beta)
    return unnormalised - torch.logsumexp(unnormalised, 0)


def kl(logp_a: torch.Tensor, logp_b: torch.Tensor) -> float:
    """(N,), (N,) -> KL(a || b) = sum_y a(y) (log a(y) - log b(y)).

    Terms with a(y) = 0 are 0 (0 log 0 = 0); the result is +inf if some y has a(y) > 0 and b(y) = 0.
    """
    logp_a, logp_b = as_f64(logp_a, "logp_a", logp=True), as_f64(logp_b, "logp_b", logp=True)
    same_shape(logp_a=logp_a, logp_b=logp_b)
    p_a = logp_a.exp()
    # Mask before multiplying: with a = b = -inf the difference is NaN, and 0 * inf is NaN too.
    terms = torch.where(p_a > 0, p_a * (logp_a - logp_b), torch.zeros_like(p_a))
    return float(terms.sum())


def total_variation(logp_a: torch.Tensor, logp_b: torch.Tensor) -> float:
    """(N,), (N,) -> TV(a, b) = 1/2 sum_y |a(y) - b(y)|, in [0, 1]."""
    logp_a, logp_b = as_f64(logp_a, "logp_a", logp=True), as_f64(logp_b, "logp_b", logp=True)
    same_shape(logp_a=logp_a, logp_b=logp_b)
    return float(0.5 * (logp_a.exp() - logp_b.exp()).abs().sum())


def expected(logp: torch.Tensor, values: torch.Tensor) -> float:
    """(N,), (N,) -> E_p[v] = sum_y p(y) v(y)."""
    logp, values = as_f64(logp, "logp", logp=True), as_f64(values, "values")
    same_shape(logp=logp, values=values)
    return float((logp.exp() * values).sum())


@dataclass(frozen=True)
class PosteriorReport:
    """How a policy pi compares with the exact optimum pi* of E[r] - beta KL(pi || pi0). All in nats.

    Invariants: ``objective_opt = beta * log_z``, and
    ``objective_pi = objective_opt - beta * kl_pi_to_opt`` (up to float64 rounding).
    """

    beta: float
    log_z: float  # log Z = log E_pi0[exp(r / beta)]
    kl_pi_to_opt: float  # KL(pi || pi*): the objective gap, divided by beta
    kl_opt_to_pi: float  # KL(pi* || pi): mass of pi* that pi misses (mode-covering direction)
    tv: float  # total variation between pi and pi*
    reward_pi: float  # E_pi[r]
    reward_opt: float  # E_pi*[r]
    kl_pi_to_ref: float  # KL(pi || pi0)
    kl_opt_to_ref: float  # KL(pi* || pi0) = E_pi*[r] / beta - log Z
    objective_pi: float  # E_pi[r] - beta KL(pi || pi0)
    objective_opt: float  # E_pi*[r] - beta KL(pi* || pi0) = beta log Z

    def as_metrics(self, prefix: str = "bayes/") -> dict[str, float]:
        """Flat dict with namespaced keys for the logger, e.g. ``bayes/kl_pi_to_opt``."""
        return {f"{prefix}{key}": value for key, value in asdict(self).items()}


def compare_to_optimum(
    policy_logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float
) -> PosteriorReport:
    """(N,) x 3 -> PosteriorReport of pi against pi* = pi0 exp(r / beta) / Z on the enumerated space.

    ``policy_logp`` and ``ref_logp`` must be normalised over the N outcomes (checked to 1e-4).
    """
    policy_logp = as_f64(policy_logp, "policy_logp", logp=True)
    ref_logp, rewards = as_f64(ref_logp, "ref_logp", logp=True), as_f64(rewards, "rewards")
    same_shape(policy_logp=policy_logp, ref_logp=ref_logp, rewards=rewards)
    beta = check_beta(beta)
    check_normalised(policy_logp, "policy_logp")
    check_normalised(ref_logp, "ref_logp")
    opt_logp = posterior_logp(ref_logp, rewards, beta)
    reward_pi = expected(policy_logp, rewards)
    kl_pi_to_ref = kl(policy_logp, ref_logp)
    log_z = log_partition(ref_logp, rewards, beta)
    return PosteriorReport(
        beta=beta,
        log_z=log_z,
        kl_pi_to_opt=kl(policy_logp, opt_logp),
        kl_opt_to_pi=kl(opt_logp, policy_logp),
        tv=total_variation(policy_logp, opt_logp),
        reward_pi=reward_pi,
        reward_opt=expected(opt_logp, rewards),
        kl_pi_to_ref=kl_pi_to_ref,
        kl_opt_to_ref=kl(opt_logp, ref_logp),
        objective_pi=reward_pi - beta * kl_pi_to_ref,
        objective_opt=beta * log_z,
    )


class FrontierPoint(NamedTuple):
    """One point of the optimal reward-vs-KL curve: pi* for this beta."""

    beta: float
    kl_opt_to_ref: float  # KL(pi*_beta || pi0)
    reward_opt: float  # E_{pi*_beta}[r]


def optimal_frontier(
    ref_logp: torch.Tensor, rewards: torch.Tensor, betas: Sequence[float]
) -> list[FrontierPoint]:
    """(N,), (N,), betas -> [(beta, KL(pi*_beta || pi0), E_pi*_beta[r])] in the order of ``betas``.

    No policy at KL budget KL(pi*_beta || pi0) earns more reward than pi*_beta, so these points bound
    every trained policy's (KL, reward) point from above. With t = 1/beta, d E[r]/dt = Var_pi*(r) >= 0 and
    d KL/dt = t Var_pi*(r) >= 0: both grow as beta shrinks, from (0, E_pi0[r]) towards the best reward.
    """
    ref_logp, rewards = as_f64(ref_logp, "ref_logp", logp=True), as_f64(rewards, "rewards")
    same_shape(ref_logp=ref_logp, rewards=rewards)
    check_normalised(ref_logp, "ref_logp")
    points = []
    for beta in betas:
        opt_logp = posterior_logp(ref_logp, rewards, beta)
        points.append(FrontierPoint(float(beta), kl(opt_logp, ref_logp), expected(opt_logp, rewards)))
    return points

