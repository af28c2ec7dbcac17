"""The reference policy pi_ref of the KL penalty, and LoRA adapters.

With LoRA the reference is the same network with the adapter switched off: no second copy of the weights
in memory. Otherwise it is a frozen copy of the initial model.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import cast

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from transformers import PreTrainedModel

from langrl.models.forward import completion_logits


def apply_lora(model: PreTrainedModel, r: int, alpha: float, dropout: float,
               target_modules: list[str] | str | None, task_type: str | None = "CAUSAL_LM") -> PeftModel:
    """Wrap ``model`` with a LoRA adapter (Hu et al. 2021); only the adapter trains. ``target_modules``
    None: PEFT's default for the architecture; ``task_type`` None for a model without an LM head."""
    config = PeftLoraConfig(r=r, lora_alpha=alpha,  # type: ignore[arg-type]  # peft types it int; floats work
                            lora_dropout=dropout, target_modules=target_modules, task_type=task_type)
    with warnings.catch_warnings():  # peft reads a property transformers 5 deprecated: noise to a user
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        return get_peft_model(model, config)


@contextmanager
def merged_lora(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """``model`` with its LoRA adapters folded into the base weights, for inference (sampling).

    Decoding through an unmerged adapter adds two small matmuls (and their dispatch overhead) to every
    linear layer of every step. Inside the context each adapted weight is replaced by ``W + scale * B @ A``
    (a new tensor) and each LoRA wrapper is swapped out of the module tree for its base layer, so the
    network runs as a plain model: even with its adapter disabled, PEFT's wrapper costs ~75 us of Python
    per call, 16 ms per decode step of SmolLM2-135M (210 wrapped layers). On exit the wrappers and the
    original tensors are put back untouched. (PEFT's ``merge_adapter``/``unmerge_adapter`` instead add and
    subtract in place, which moves the frozen base, i.e. the reference, by a rounding error every call:
    negligible in float32, up to half a bfloat16 ulp (0.2%) per call in bfloat16.) The merged copies
    cost the adapted weights' size while sampling. Without LoRA, or with adapters this does not know how
    to fold (DoRA, LoRA bias, non-linear layers), ``model`` is returned as it is.
    """
    layers: list[torch.nn.Module] = \
        [m for m in model.modules() if hasattr(m, "lora_A")] if isinstance(model, PeftModel) else []
    if not layers or not all(foldable(m) for m in layers):
        yield model
        return
    wrapped = {id(m) for m in layers}
    slots = [(parent, name, cast(LoraLinear, child)) for parent in model.modules()  # all foldable
             for name, child in parent.named_children() if id(child) in wrapped]
    originals = []
    with torch.no_grad():
        for parent, name, layer in slots:
            base = layer.get_base_layer()
            originals.append((base, base.weight.data))
            base.weight.data = folded_weight(layer)
            setattr(parent, name, base)
    try:
        yield model
    finally:
        for parent, name, layer in slots:
            setattr(parent, name, layer)
        for base, weight in originals:
            base.weight.data = weight


def folded_weight(layer: LoraLinear) -> torch.Tensor:
    """``W + scale * B @ A`` summed over the active adapters, in one ``addmm`` pass per adapter."""
    weight = cast(torch.Tensor, layer.get_base_layer().weight)
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        if layer.fan_in_fan_out or weight.device.type == "cpu" and weight.dtype != torch.float32:
            weight = weight + layer.get_delta_weight(name)  # transposed layout / CPU half precision
        else:
            weight = torch.addmm(weight, cast(torch.Tensor, layer.lora_B[name].weight),
                                 cast(torch.Tensor, layer.lora_A[name].weight), alpha=layer.scaling[name])
    return weight


def foldable(layer: torch.nn.Module) -> bool:
    """A plain LoRA linear layer: its adapter is exactly ``W + scale * B @ A``."""
    return (isinstance(layer, LoraLinear) and not getattr(layer, "lora_variant", {})
            and not any(getattr(layer, "lora_bias", {}).values()))


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

    @contextmanager
    def model(self, policy: PreTrainedModel) -> Iterator[PreTrainedModel]:
        """The network that computes pi_ref, for the duration of the context: the frozen copy, or
        ``policy`` with its LoRA adapter switched off. Every use of the reference goes through this."""
        if self.frozen is not None:
            yield self.frozen
            return
        switch_off = cast(PeftModel, policy).disable_adapter() if self.use_adapter else nullcontext()
        with switch_off:
            yield policy

    @torch.inference_mode()
    def logits(self, policy: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               completion_len: int, temperature: float) -> torch.Tensor:
        """(B, Tc, V) reference logits for the completion positions."""
        with self.model(policy) as model:
            return completion_logits(model, input_ids, attention_mask, completion_len, temperature)
