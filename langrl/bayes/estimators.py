"""Importance-sampling estimates of log Z and of the distance to pi* = pi0 exp(r / beta) / Z for real models.

Inputs are per-sample sequence log-probabilities (summed over completion tokens) and rewards of M
completions of one prompt, all shape (M,); no model code. The log importance weight of a sample y ~ pi
towards the unnormalised target pi0(y) exp(r(y) / beta) is

    log w(y) = log pi0(y) + r(y) / beta - log pi(y),      E_pi[w] = Z.

Estimates converge as M grows but are only as good as the overlap of pi with pi*: check
``effective_sample_fraction`` (near 0 means a few samples carry all the weight and the estimate is
unreliable). See Korbak, Perez & Buckley 2022 for the Bayesian view, Owen 2013 ("Monte Carlo theory,
methods and examples", ch. 9) for self-normalised importance sampling and the effective sample size.
"""

from __future__ import annotations

import math

import torch

from langrl.bayes._checks import as_f64, check_beta, same_shape


def _log_mean_exp(x: torch.Tensor) -> torch.Tensor:
    """(M,) -> (): log (1/M) sum_i exp(x_i), stably."""
    return torch.logsumexp(x, 0) - math.log(x.numel())


def log_importance_weights(
    policy_logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float
) -> torch.Tensor:
    """(M,) x 3 -> (M,) float64: log w_i = log pi0(y_i) + r(y_i) / beta - log pi(y_i), for y_i ~ pi."""
    policy_logp = as_f64(policy_logp, "policy_logp", logp=True)
    ref_logp, rewards = as_f64(ref_logp, "ref_logp", logp=True), as_f64(rewards, "rewards")
    same_shape(policy_logp=policy_logp, ref_logp=ref_logp, rewards=rewards)
    if (policy_logp == -math.inf).any():
        raise ValueError("policy_logp has -inf: a sample from pi cannot have probability zero under pi")
    return ref_logp + rewards / check_beta(beta) - policy_logp


def log_z_from_reference(rewards: torch.Tensor, beta: float) -> float:
    """(M,) rewards of samples y_i ~ pi0 -> log Z_hat = logsumexp_i(r_i / beta) - log M.

    Z_hat = (1/M) sum_i exp(r_i / beta) is unbiased for Z = E_pi0[exp(r / beta)], so by Jensen
    E[log Z_hat] <= log Z: biased low, consistent as M -> inf. The bias is worst for small beta, where Z
    is dominated by rare high-reward samples that pi0 seldom draws.
    """
    rewards = as_f64(rewards, "rewards")
    return float(_log_mean_exp(rewards / check_beta(beta)))


def log_z_from_policy(
    policy_logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float
) -> float:
    """(M,) x 3 for samples y_i ~ pi -> log Z_hat = logsumexp_i(log pi0 + r / beta - log pi) - log M.

    Importance sampling with proposal pi: E_pi[pi0 exp(r / beta) / pi] = Z, so Z_hat is unbiased (when
    pi > 0 wherever pi0 > 0) and log Z_hat is biased low by Jensen, consistent as M -> inf. The closer pi
    is to pi*, the lower the variance (pi = pi* gives Z_hat = Z from a single sample).
    """
    return float(_log_mean_exp(log_importance_weights(policy_logp, ref_logp, rewards, beta)))


def kl_pi_to_opt_from_policy(
    policy_logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float
) -> float:
    """(M,) x 3 for samples y_i ~ pi -> estimate of KL(pi || pi*) = KL(pi || pi0) - E_pi[r] / beta + log Z.

        KL_hat = -(1/M) sum_i log w_i + log Z_hat,    log Z_hat = log (1/M) sum_i w_i,

    i.e. log-mean-exp minus mean of the log weights, so KL_hat >= 0 always (Jensen). The first term is
    unbiased; log Z_hat is biased low, so KL_hat is biased low and consistent. ``beta * KL_hat`` estimates
    how far pi's objective E[r] - beta KL(pi || pi0) is below the optimum beta log Z.
    """
    log_w = log_importance_weights(policy_logp, ref_logp, rewards, beta)
    return float(_log_mean_exp(log_w) - log_w.mean())


def self_normalised_kl_opt_to_pi(
    policy_logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float
) -> float:
    """(M,) x 3 for samples y_i ~ pi -> estimate of KL(pi* || pi) by self-normalised importance sampling.

        w~_i = w_i / sum_j w_j,   log pi*(y_i) - log pi(y_i) = log w_i - log Z_hat,
        KL_hat = sum_i w~_i (log w_i - log Z_hat).

    Self-normalised IS is biased at O(1/M) and consistent; it is biased low when pi misses regions that
    pi* favours (those regions are never sampled), which is exactly what this direction of the KL
    measures, so read it together with ``effective_sample_fraction``. KL_hat >= 0 always (it is the KL of
    w~ from the uniform weights 1/M).
    """
    log_w = log_importance_weights(policy_logp, ref_logp, rewards, beta)
    log_w_normalised = log_w - torch.logsumexp(log_w, 0)  # log w~_i
    log_z_hat = _log_mean_exp(log_w)
    return float((log_w_normalised.exp() * (log_w - log_z_hat)).sum())


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """(M,) log importance weights -> ESS = (sum_i w_i)^2 / sum_i w_i^2, in [1, M] (Kish 1965).

    Computed as exp(2 logsumexp(log w) - logsumexp(2 log w)); invariant to scaling the weights, so
    unnormalised log weights are fine. Equal weights give M; one dominant weight gives 1.
    """
    log_w = as_f64(log_weights, "log_weights", logp=True)
    if (log_w == -math.inf).all():
        raise ValueError("all importance weights are zero; the effective sample size is undefined")
    return float((2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)).exp())


def effective_sample_fraction(log_weights: torch.Tensor) -> float:
    """(M,) log importance weights -> ESS / M, in [1/M, 1]: the per-sample efficiency of the estimate."""
    return effective_sample_size(log_weights) / torch.as_tensor(log_weights).numel()
