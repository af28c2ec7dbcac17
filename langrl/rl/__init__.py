"""Pure RL maths (torch only): returns and advantages with per-step discounts, KL estimators and
controllers, policy, value and PPO losses, TD targets, DPG weights. Shapes and equations are in each
function's docstring; nothing here knows about models, rollouts or run folders."""

from langrl.rl.advantages import (
    baseline_advantages,
    grpo_advantages,
    rloo_advantages,
    update_moving_average,
)
from langrl.rl.kl import KL_ESTIMATORS, kl_exact, kl_k1, kl_k2, kl_k3, sequence_kl
from langrl.rl.policy import AGGREGATIONS, clipped_surrogate, seq_mean, seq_sum, token_mean
from langrl.rl.ppo import ppo_loss
from langrl.rl.returns import gae, token_discounts, whiten
from langrl.rl.td import (
    double_q_target,
    expected_sarsa_target,
    n_step_return,
    q_learning_target,
    sarsa_target,
    soft_log_ratio,
    soft_policy,
    soft_q_target,
    soft_value,
    td_error,
)

__all__ = [
    "AGGREGATIONS", "KL_ESTIMATORS", "baseline_advantages", "clipped_surrogate", "double_q_target",
    "expected_sarsa_target", "gae", "grpo_advantages", "kl_exact", "kl_k1", "kl_k2", "kl_k3", "n_step_return",
    "ppo_loss", "q_learning_target", "rloo_advantages", "sarsa_target", "seq_mean", "seq_sum", "sequence_kl",
    "soft_log_ratio", "soft_policy", "soft_q_target", "soft_value", "td_error", "token_discounts", "token_mean",
    "update_moving_average", "whiten",
]
