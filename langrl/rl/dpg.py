"""Distribution matching: distributional policy gradients (DPG) towards an energy-based target.

Instead of maximising a reward, DPG moves the policy pi towards a fixed target distribution pi*,
defined up to its normaliser Z by an unnormalised energy-based model P over whole sequences y:

    P(y) = pi0(y) exp(r(y) / beta)     (the optimum of E[r] - beta KL(pi || pi0); Korbak et al. 2022)
    P(y) = pi0(y) a(y), a(y) in {0, 1} (a hard constraint; Khalifa et al. 2021)
    pi*(y) = P(y) / Z,  Z = sum_y P(y)

Samples come from a proposal q (pi itself, or an older snapshot of it kept until pi is closer to pi*
than q is), so every expectation under pi* is taken by importance sampling with self-normalised weights
(Z estimated from the batch).

References: Khalifa et al. 2021, "A distributional approach to controlled text generation" (ICLR);
Korbak et al. 2022, "On reinforcement learning and distribution matching for fine-tuning language models
with no catastrophic forgetting" (NeurIPS); Go et al. 2023, "Aligning language models with preferences
through f-divergence minimization" (ICML).

All log-probabilities here are per sequence (summed over its tokens), shape (B,). ``dpg_weights`` and
``estimate_kl_target_to`` also accept (P, G): P prompts, G samples each, normalised within each prompt,
since Z = Z(x) depends on the prompt (conditional DPG).
"""

from __future__ import annotations

import math

import torch


def log_target(
    ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float | None, constraint: bool
) -> torch.Tensor:
    """log P(y), the unnormalised log-density of the target EBM, (B,) x (B,) -> (B,).

        log P(y) = log pi0(y) + r(y) / beta                  (constraint=False)
        log P(y) = log pi0(y) + log a(y),  a = [r(y) > 0.5]  (constraint=True: -inf where a = 0)

    ``beta`` is required without ``constraint`` and ignored with it.
    """
    if constraint:
        allowed = rewards.to(ref_logp.dtype) > 0.5
        return torch.where(allowed, ref_logp, torch.full_like(ref_logp, -math.inf))
    if beta is None or beta <= 0:
        raise ValueError(f"log_target needs beta > 0 for a reward-tilted target, got beta={beta}")
    return ref_logp + rewards.to(ref_logp.dtype) / beta


def dpg_weights(log_target: torch.Tensor, proposal_logp: torch.Tensor) -> torch.Tensor:
    """Self-normalised importance weights, (B,) x (B,) -> (B,) (or (P, G) -> (P, G), per prompt).

        w_i = B * softmax_i(log P(y_i) - log q(y_i)) = (P(y_i) / q(y_i)) / ((1/B) sum_j P(y_j) / q(y_j))

    with y_i ~ q. The denominator estimates Z, so w_i estimates pi*(y_i) / q(y_i); the weights have mean
    1. They are constants for the loss (detached). A batch where no sample has P > 0 (a constraint that
    nothing satisfied) gets all-zero weights rather than NaN.
    """
    log_w = (log_target - proposal_logp).detach()
    n = log_w.size(-1)
    weights = torch.softmax(log_w, dim=-1) * n
    nothing = torch.isneginf(log_w.amax(-1, keepdim=True))
    return torch.where(nothing, torch.zeros_like(weights), weights)


def dpg_loss(policy_logp: torch.Tensor, proposal_logp: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """KL-DPG loss with the pi/q baseline (Khalifa et al. 2021; Korbak et al. 2022), (B,) x3 -> scalar.

        loss = -(1/B) sum_i (w_i - rho_i) log pi(y_i),   rho_i = pi(y_i) / q(y_i) (detached),   y_i ~ q

    Derivation. The target pi* does not depend on the policy parameters theta, so

        grad KL(pi* || pi) = grad sum_y pi*(y) (log pi*(y) - log pi(y)) = -E_{y~pi*}[grad log pi(y)]
                           = -E_{y~q}[(pi*(y) / q(y)) grad log pi(y)]
                           ~ -(1/B) sum_i w_i grad log pi(y_i)

    with w the self-normalised weights of ``dpg_weights``. A baseline can be subtracted without bias:

        E_{y~q}[(pi(y) / q(y)) grad log pi(y)] = sum_y grad pi(y) = grad 1 = 0,

    so -(1/B) sum_i (w_i - rho_i) grad log pi(y_i) is the same estimate with lower variance: it is the
    gradient of this loss, since w and rho are constants. When q = pi, rho = 1 and this is the baseline
    "Z" of Korbak et al. 2022 in normalised form; samples more likely under pi* than under pi (w > rho)
    are pushed up, the others down. The self-normalisation of w makes the estimate consistent, with a
    bias of order 1/B. ``policy_logp`` carries the gradient; ``proposal_logp`` and ``weights`` are data.
    """
    rho = torch.exp(policy_logp.detach() - proposal_logp.detach())
    return -((weights - rho) * policy_logp).mean()


def estimate_kl_target_to(
    log_target: torch.Tensor, proposal_logp: torch.Tensor, model_logp: torch.Tensor
) -> float:
    """Self-normalised importance-sampling estimate of KL(pi* || m) from samples of q, (B,) x3 -> float.

        log Z_hat    = logsumexp_i(log P(y_i) - log q(y_i)) - log B
        log pi*(y)   = log P(y) - log Z_hat
        KL(pi* || m) ~ sum_i w~_i (log pi*(y_i) - log m(y_i)),   w~ = softmax(log P - log q)

    with m any model's sequence log-probs on the same samples: m = pi and m = q give KL(pi* || pi) and
    KL(pi* || q), which decide when the proposal q is replaced by pi (Khalifa et al. 2021, Algorithm 1).
    Samples with P = 0 contribute nothing. For (P, G) inputs, the mean over prompts of the per-prompt
    estimates. A batch with no sample of P > 0 gives NaN (there is nothing to estimate from).
    """
    log_target = log_target.detach().double()
    log_w = log_target - proposal_logp.detach().double()
    n = log_w.size(-1)
    log_z = torch.logsumexp(log_w, dim=-1, keepdim=True) - math.log(n)
    w = torch.softmax(log_w, dim=-1)
    log_ratio = log_target - log_z - model_logp.detach().double()
    # w = 0 exactly where P = 0, and there log P = -inf would make 0 * inf = NaN.
    terms = torch.where(w > 0, w * log_ratio, torch.zeros_like(w))
    per_prompt = terms.sum(-1)
    nothing = torch.isneginf(log_w.amax(-1))
    return float(torch.where(nothing, torch.full_like(per_prompt, math.nan), per_prompt).mean())
