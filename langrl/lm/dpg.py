"""KL-DPG: distribution matching toward pi* = pi0 exp(r / beta) / Z (or pi0 a / Z with a(y) in {0, 1}).

Instead of maximising E[r] - beta KL(pi || pi0) (whose optimum is pi*), DPG minimises KL(pi* || pi)
directly (Khalifa et al. 2021; Korbak et al. 2022). Samples come from a proposal q; importance weights
P(y) / q(y), self-normalised per prompt, make them samples of pi*. The proposal starts as pi0 and is
replaced by a snapshot of pi whenever pi is estimated to be closer to pi* than q is
(``dpg.swap_proposal``), which keeps the importance weights well-behaved as pi improves.

``kl/ref`` in the logs is measured on the proposal's samples, i.e. it is KL(q || pi0); the exact monitor
(``bayes.exact``) gives KL(pi || pi0) on toy tasks.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from langrl.config import Config
from langrl.lm.base import Algorithm
from langrl.lm.batch import Batch
from langrl.models.forward import completion_logits, token_entropy, token_logprobs
from langrl.rl.dpg import dpg_loss, dpg_weights, estimate_kl_target_to
from langrl.rl.dpg import log_target as target_logp
from langrl.run.optim import minibatch_epochs, trainable


class DPG(Algorithm):
    """Off-policy distribution matching with a proposal that follows the policy when it is better."""

    def __init__(self, name: str, config: Config, policy: PreTrainedModel):
        super().__init__(name, config)
        # A copy of the initial policy (= pi0), with the policy's structure (LoRA included) so that later
        # snapshots of the policy load into it.
        self.proposal: PreTrainedModel = copy.deepcopy(policy).eval().requires_grad_(False)
        self.swaps = 0

    def behaviour(self, policy: PreTrainedModel) -> PreTrainedModel:
        return self.proposal

    def modules(self) -> dict[str, nn.Module]:
        return {"proposal": self.proposal}

    def update(self, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
               batch: Batch) -> dict[str, float]:
        mask = batch.completion_mask.float()
        beta = None if self.config.dpg.constraint else self.kl_coef
        groups = (-1, batch.group_size)
        proposal_logp = (batch.old_logprobs * mask).sum(-1)
        log_p = target_logp((batch.ref_logprobs * mask).sum(-1), batch.rewards, beta,
                            self.config.dpg.constraint)
        weights = dpg_weights(log_p.view(groups), proposal_logp.view(groups)).reshape(-1)
        policy_logp: list[torch.Tensor] = []

        def loss(rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            part = batch.rows(rows)
            logits = completion_logits(model, part.input_ids, part.attention_mask, part.completion_ids.size(1),
                                       self.config.sampling.temperature)
            seq_logp = (token_logprobs(logits, part.completion_ids) * mask[rows]).sum(-1)
            policy_logp.append(seq_logp.detach())
            count = mask[rows].sum().clamp(min=1)
            entropy = float((token_entropy(logits.detach()) * mask[rows]).sum() / count)
            value = dpg_loss(seq_logp, proposal_logp[rows], weights[rows])
            return value, {"loss/policy": float(value.detach()), "entropy": entropy}

        model.train()
        # One pass in order (the sequence log-probs are gathered in batch order), one optimizer step.
        metrics = minibatch_epochs(len(batch), self.config.train.micro_batch_size, 1, loss, optimizer,
                                   trainable(model), self.config.optim.max_grad_norm, step_every="epoch",
                                   device=mask.device)
        model.eval()
        pi_logp = torch.cat(policy_logp)
        kl_pi = estimate_kl_target_to(log_p.view(groups), proposal_logp.view(groups), pi_logp.view(groups))
        kl_q = estimate_kl_target_to(log_p.view(groups), proposal_logp.view(groups),
                                     proposal_logp.view(groups))
        if self.config.dpg.swap_proposal and kl_pi < kl_q:
            # pi (as sampled-on, before this update) is estimated closer to pi* than q: from now on the
            # updated policy is the proposal.
            self.proposal = copy.deepcopy(model).eval().requires_grad_(False)
            self.swaps += 1
        return {**metrics, "dpg/kl_target_to_pi": kl_pi, "dpg/kl_target_to_q": kl_q, "dpg/swaps": float(self.swaps),
                "dpg/weight_max": float(weights.max())}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "swaps": self.swaps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.swaps = int(state.get("swaps", 0))
