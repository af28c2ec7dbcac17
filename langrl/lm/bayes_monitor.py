"""Bayesian diagnostics during training: exact on enumerable spaces, importance-sampled on real models.

``ExactMonitor`` enumerates every completion of a single prompt (V**L of them), scores them once with the
task reward, computes the reference's log-probs once, and at each call the policy's, then compares the
policy with pi* = pi0 exp(r / beta) / Z exactly. ``sample_estimates`` turns a batch of the policy's own
samples into importance-sampling estimates of log Z, KL(pi || pi*), KL(pi* || pi) and the ESS.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.bayes.best_of_n import BEST_OF_N, best_of_n_kl, best_of_n_logp
from langrl.bayes.estimators import (
    effective_sample_fraction,
    kl_pi_to_opt_from_policy,
    log_importance_weights,
    log_z_from_policy,
    self_normalised_kl_opt_to_pi,
)
from langrl.bayes.exact import compare_to_optimum, enumerate_sequences, expected, optimal_frontier
from langrl.errors import ConfigError
from langrl.models.forward import completion_logits
from langrl.models.reference import Reference
from langrl.rewards import RewardFn, score

CHUNK = 4096


class ExactMonitor:
    """Exact comparison of the policy with pi* for one prompt whose completions can be enumerated."""

    def __init__(self, prompt_ids: list[int], prompt_text: str, tokenizer: PreTrainedTokenizerBase,
                 length: int, reward: RewardFn, temperature: float):
        vocab = len(tokenizer)
        try:
            self.sequences = enumerate_sequences(vocab, length)
        except ValueError as e:
            raise ConfigError(f"bayes.exact needs an enumerable space: {e}") from e
        self.prompt = torch.tensor(prompt_ids, dtype=torch.long)
        self.temperature = temperature
        texts = tokenizer.batch_decode(self.sequences)
        self.rewards = torch.tensor(score(reward, [prompt_text] * len(texts), texts), dtype=torch.float64)
        self.ref_logp: torch.Tensor | None = None

    @torch.inference_mode()
    def sequence_logp(self, model: PreTrainedModel, reference: Reference | None = None) -> torch.Tensor:
        """(N,) log-probability of every completion under ``model`` (or the reference).

        Only the V**(L-1) prefixes go through the model: the distribution at a prefix's last position
        scores all V completions that extend it, so the pass is V times smaller than one per completion.
        A dummy token after each prefix makes that position's logits come out of ``completion_logits``.
        """
        device = next(model.parameters()).device
        length = self.sequences.size(1)
        vocab = int(self.sequences.max()) + 1
        prefixes = self.sequences[::vocab, : length - 1]  # lexicographic order: every V-th row
        out = []
        for chunk in prefixes.split(CHUNK):
            dummy = torch.zeros(len(chunk), 1, dtype=torch.long)
            ids = torch.cat([self.prompt.expand(len(chunk), -1), chunk, dummy], dim=1).to(device)
            mask = torch.ones_like(ids)
            if reference is None:
                logits = completion_logits(model, ids, mask, length, self.temperature)
            else:
                logits = reference.logits(model, ids, mask, length, self.temperature)
            logp = logits.float().log_softmax(-1)
            prefix_logp = logp[:, :-1].gather(-1, chunk.to(device)[..., None]).squeeze(-1).sum(-1)
            out.append((prefix_logp[:, None] + logp[:, -1]).reshape(-1).double().cpu())
        return torch.cat(out)

    def reference_logp(self, policy: PreTrainedModel, reference: Reference) -> torch.Tensor:
        """(N,) log pi0 of every completion, computed once."""
        if self.ref_logp is None:
            self.ref_logp = self.sequence_logp(policy, reference)
        return self.ref_logp

    def curves(self, policy: PreTrainedModel, reference: Reference) -> dict[str, list[list[float]]]:
        """The exact optimal reward-vs-KL curve over beta, and exact best-of-n, as [kl, reward] pairs."""
        ref_logp = self.reference_logp(policy, reference)
        betas = [10 ** (k / 8) for k in range(-16, 17)]  # 0.01 .. 100
        optimal = [[p.kl_opt_to_ref, p.reward_opt] for p in optimal_frontier(ref_logp, self.rewards, betas)]
        best = [[best_of_n_kl(ref_logp, self.rewards, n),
                 expected(best_of_n_logp(ref_logp, self.rewards, n), self.rewards)] for n in BEST_OF_N]
        return {"optimal": sorted(optimal), "best_of_n": best}

    def __call__(self, policy: PreTrainedModel, reference: Reference, beta: float) -> dict[str, float]:
        """``bayes/...`` metrics: ``kl_to_optimum`` is the exact KL(pi || pi*), in nats."""
        ref_logp = self.reference_logp(policy, reference)
        report = compare_to_optimum(self.sequence_logp(policy), ref_logp, self.rewards, beta)
        return {
            "bayes/kl_to_optimum": report.kl_pi_to_opt,
            "bayes/kl_optimum_to_pi": report.kl_opt_to_pi,
            "bayes/tv_to_optimum": report.tv,
            "bayes/log_z": report.log_z,
            "bayes/reward_exact": report.reward_pi,
            "bayes/reward_optimum": report.reward_opt,
            "bayes/kl_ref_exact": report.kl_pi_to_ref,
            "bayes/kl_ref_optimum": report.kl_opt_to_ref,
        }


def sample_estimates(policy_logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor,
                     beta: float) -> dict[str, float]:
    """Importance-sampling diagnostics from M samples of the policy (per-sequence log-probs, rewards)."""
    log_w = log_importance_weights(policy_logp, ref_logp, rewards, beta)
    return {
        "bayes/log_z_is": log_z_from_policy(policy_logp, ref_logp, rewards, beta),
        "bayes/kl_to_optimum_is": kl_pi_to_opt_from_policy(policy_logp, ref_logp, rewards, beta),
        "bayes/kl_optimum_to_pi_is": self_normalised_kl_opt_to_pi(policy_logp, ref_logp, rewards, beta),
        "bayes/ess_fraction": effective_sample_fraction(log_w),
    }
