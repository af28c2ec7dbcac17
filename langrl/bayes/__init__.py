"""The Bayesian view of KL-regularised RL: pi* = pi0 exp(r / beta) / Z, exactly and by sampling.

- ``exact``: log Z, pi*, KL/TV and a full comparison of a policy with pi* on enumerable spaces.
- ``best_of_n``: the exact best-of-n distribution (ties handled), its KL from pi0, and the analytic bound.
- ``estimators``: importance-sampling estimates of log Z, KL(pi || pi*), KL(pi* || pi) and the ESS for
  real models, from per-sample sequence log-probs and rewards.

Reference: Korbak, Perez & Buckley 2022, "RL with KL penalties is better viewed as Bayesian inference".
"""

from langrl.bayes.best_of_n import (
    best_of_n_kl,
    best_of_n_kl_bound,
    best_of_n_logp,
    empirical_best_of_n_reward,
    sample_best_of_n,
    unbiased_best_of_n_reward,
)
from langrl.bayes.estimators import (
    effective_sample_fraction,
    effective_sample_size,
    kl_pi_to_opt_from_policy,
    log_importance_weights,
    log_z_from_policy,
    log_z_from_reference,
    self_normalised_kl_opt_to_pi,
)
from langrl.bayes.exact import (
    MAX_ENUMERATED,
    FrontierPoint,
    PosteriorReport,
    compare_to_optimum,
    enumerate_sequences,
    expected,
    kl,
    log_partition,
    optimal_frontier,
    posterior_logp,
    total_variation,
)

__all__ = [
    "MAX_ENUMERATED", "FrontierPoint", "PosteriorReport", "best_of_n_kl", "best_of_n_kl_bound",
    "best_of_n_logp", "compare_to_optimum", "empirical_best_of_n_reward", "effective_sample_fraction",
    "effective_sample_size",
    "enumerate_sequences", "expected", "kl", "kl_pi_to_opt_from_policy", "log_importance_weights",
    "log_partition", "log_z_from_policy", "log_z_from_reference", "optimal_frontier", "posterior_logp",
    "sample_best_of_n", "self_normalised_kl_opt_to_pi", "total_variation", "unbiased_best_of_n_reward",
]
