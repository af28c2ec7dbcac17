"""Tier 2: the shared-prompt forward (prompt once per group, then its KV cache for each completion) gives
the same logits, hidden states and gradients as one plain forward over every full row."""

import pytest
import torch

from langrl.losses.logprobs import completion_forward, repeated_rows, token_logprobs
from langrl.models.reference import apply_lora
from langrl.prompts import encode, left_pad
from langrl.rollout import SamplingConfig, sample


def plain_forward(model, ids, mask, tc, temperature=1.0):
    """The oracle: every row in full, no cache, all positions through the LM head."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
    return out.logits[:, -tc - 1:-1] / temperature, out.hidden_states[-1][:, -tc - 1:-1]


def grouped_rollout(lm, prompts=("hi", "a much longer prompt here", "mid size"), group_size=3, seed=0):
    ids, mask = left_pad(encode(list(prompts), lm.tokenizer, chat=True), lm.tokenizer.pad_token_id,
                         torch.device("cpu"))
    config = SamplingConfig(max_new_tokens=10, group_size=group_size, temperature=0.7)
    return sample(lm.model, ids, mask, config, lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id,
                  torch.Generator().manual_seed(seed))


def test_repeated_rows_finds_consecutive_runs():
    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2], [1, 2], [1, 2]])
    mask = torch.ones_like(ids)
    mask[5, 0] = 0  # same ids, different mask: a new run
    first, index = repeated_rows(ids, mask)
    assert first.tolist() == [0, 2, 3, 5]
    assert index.tolist() == [0, 0, 1, 2, 2, 3]


@pytest.mark.parametrize("rows", ["groups", "distinct", "ragged"])
def test_shared_forward_equals_plain_forward_values_and_gradients(tiny, rows):
    r = grouped_rollout(tiny)
    ids, mask, comp = r.input_ids, r.attention_mask, r.completion_ids
    if rows == "distinct":  # one row per prompt: nothing to share, the plain path
        ids, mask, comp = ids[::3], mask[::3], comp[::3]
    if rows == "ragged":  # a micro-batch that cuts groups: runs of 2, 3, 1
        ids, mask, comp = ids[1:7], mask[1:7], comp[1:7]
    tc = comp.size(1)
    weights = torch.linspace(-1, 1, ids.size(0))[:, None]
    model = tiny.model

    def loss_and_grads(forward):
        model.zero_grad(set_to_none=True)
        logits, hidden = forward()
        (token_logprobs(logits, comp) * weights).sum().add(hidden.square().mean()).backward()
        return logits.detach(), hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    fed = []  # tokens entering the network, per call
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, out: fed.append(i[0].numel()))
    got = loss_and_grads(lambda: completion_forward(model, ids, mask, tc, 0.7, hidden=True))
    hook.remove()
    want = loss_and_grads(lambda: plain_forward(model, ids, mask, tc, 0.7))
    # Shared: the prompt (minus its last token) once per run of rows, then Tc tokens per row.
    if rows == "distinct":
        assert sum(fed) == ids.numel() - len(ids)  # every row but its last token
    else:
        assert sum(fed) < 0.8 * ids.numel()
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-4)
    for name, grad in want[2].items():
        torch.testing.assert_close(got[2][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_shared_forward_through_a_lora_adapter(tiny):
    r = grouped_rollout(tiny, group_size=4)
    model = apply_lora(tiny.model, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    with torch.no_grad():  # a non-zero adapter, so that its gradients depend on the prompt
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    tc = r.completion_ids.size(1)
    grads = []
    for forward in (completion_forward, plain_forward):
        model.zero_grad(set_to_none=True)
        logits = forward(model, r.input_ids, r.attention_mask, tc)[0]
        token_logprobs(logits, r.completion_ids).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_one_token_prompt_has_nothing_to_share(tiny):
    ids = torch.tensor([[5, 6, 7], [5, 8, 9]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        got, _ = completion_forward(tiny.model, ids, mask, 2)
        want, _ = plain_forward(tiny.model, ids, mask, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_sampling_with_the_adapter_folded_records_the_policy_logprobs(tiny):
    """merged_lora: samples drawn from W + scale B A carry the adapted policy's log-probs, and the base
    weights (the reference) come back bit for bit."""
    from langrl.models import merged_lora

    model = apply_lora(tiny.model, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    ids, mask = left_pad(encode(["hi", "longer prompt"], tiny.tokenizer, chat=True),
                         tiny.tokenizer.pad_token_id, torch.device("cpu"))
    config = SamplingConfig(max_new_tokens=10, group_size=3, temperature=0.7)
    with merged_lora(model) as snapshot:
        assert not any(hasattr(m, "lora_A") for m in snapshot.modules())  # wrappers swapped for base layers
        unwrapped = {n: n.replace(".weight", ".base_layer.weight") for n, _ in snapshot.named_parameters()}
        folded = [n for n, p in snapshot.named_parameters()
                  if unwrapped[n] in base and not torch.equal(p, base[unwrapped[n]])]
        assert len(folded) == 14, folded  # 7 linear layers x 2 blocks carry W + scale B A
        r = sample(snapshot, ids, mask, config, tiny.tokenizer.eos_token_id, tiny.tokenizer.pad_token_id,
                   torch.Generator().manual_seed(0))
    assert sum(hasattr(m, "lora_A") for m in model.modules()) == 14  # the wrappers are back
    for name, p in model.named_parameters():
        if name in base:
            assert torch.equal(p, base[name]), name
    tc = r.completion_ids.size(1)
    with torch.no_grad():
        logits, _ = completion_forward(model, r.input_ids, r.attention_mask, tc, 0.7)
        unmerged = token_logprobs(logits, r.completion_ids) * r.completion_mask
        with model.disable_adapter():
            logits, _ = completion_forward(model, r.input_ids, r.attention_mask, tc, 0.7)
            reference = token_logprobs(logits, r.completion_ids) * r.completion_mask
    torch.testing.assert_close(r.logprobs, unmerged, atol=1e-5, rtol=1e-4)
    assert (r.logprobs - reference).abs().max() > 1e-2, "the adapter must matter for this test to mean much"
