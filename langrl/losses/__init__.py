"""Pure functions: log-probs, KL estimators, advantages, policy losses."""

from langrl.losses.advantages import (
    baseline_advantages,
    grpo_advantages,
    rloo_advantages,
    update_moving_average,
)
from langrl.losses.kl import KL_ESTIMATORS, kl_exact, kl_k1, kl_k2, kl_k3, sequence_kl
from langrl.losses.logprobs import completion_logits, token_entropy, token_logprobs
from langrl.losses.policy import AGGREGATIONS, clipped_surrogate, seq_mean, seq_sum, token_mean

__all__ = [
    "AGGREGATIONS", "KL_ESTIMATORS", "baseline_advantages", "clipped_surrogate", "completion_logits",
    "grpo_advantages", "kl_exact", "kl_k1", "kl_k2", "kl_k3", "rloo_advantages", "seq_mean", "seq_sum",
    "sequence_kl", "token_entropy", "token_logprobs", "token_mean", "update_moving_average",
]
