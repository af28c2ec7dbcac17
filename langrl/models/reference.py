"""The reference policy pi_ref of the KL penalty, and LoRA adapters.

With LoRA the reference is the same network with the adapter switched off: no second copy of the weights
in memory. Otherwise it is a frozen copy of the initial model.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel

from langrl.losses.logprobs import completion_logits


def apply_lora(model: PreTrainedModel, r: int, alpha: float, dropout: float,
               target_modules: list[str] | str) -> PeftModel:
    """Wrap ``model`` with a LoRA adapter (Hu et al. 2021); only the adapter trains."""
    config = PeftLoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                            task_type="CAUSAL_LM")
    return get_peft_model(model, config)


class Reference:
    """Computes pi_ref's logits on completions; holds a frozen copy unless it can borrow the policy.

    Build it before LoRA is applied (for a copy) and before a checkpoint is loaded into the policy, so
    that the reference stays the initial model. ``copy_weights=False`` takes ``model`` itself as the
    frozen reference (when the caller has a separate instance for it).
    """

    def __init__(self, model: PreTrainedModel, use_adapter: bool, copy_weights: bool = True):
        self.use_adapter = use_adapter
        self.frozen: PreTrainedModel | None = None
        if not use_adapter:
            frozen = copy.deepcopy(model) if copy_weights else model
            self.frozen = frozen.eval().requires_grad_(False)

    @torch.inference_mode()
    def logits(self, policy: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               completion_len: int, temperature: float) -> torch.Tensor:
        """(B, Tc, V) reference logits for the completion positions."""
        model = policy if self.frozen is None else self.frozen
        switch_off = policy.disable_adapter() if self.use_adapter else nullcontext()
        with switch_off:
            return completion_logits(model, input_ids, attention_mask, completion_len, temperature)
