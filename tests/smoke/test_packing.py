"""Tier 2: the packed forward (each prompt once, then its completions under a block mask, no padding fed)
gives the same logits, hidden states and gradients as one plain forward over every full row."""

import pytest
import torch

from langrl.envs.prompts import encode, left_pad
from langrl.models import packing
from langrl.models.forward import completion_forward, token_logprobs
from langrl.models.reference import apply_lora
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


def weighted_loss_and_grads(model, forward, comp, mask):
    """Logits, hidden states and every gradient of a loss over the unmasked completion positions."""
    model.zero_grad(set_to_none=True)
    logits, hidden = forward()
    weights = torch.linspace(-1, 1, comp.size(0))[:, None] * mask
    (token_logprobs(logits, comp) * weights).sum().add((hidden.square().mean(-1) * mask).sum()).backward()
    keep = mask.bool()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return logits.detach()[keep], hidden.detach()[keep], grads


def assert_same(got, want):
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-4)
    for name, grad in want[2].items():
        torch.testing.assert_close(got[2][name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("rows", ["groups", "distinct", "ragged", "stopped", "split"])
def test_packed_forward_equals_plain_forward_values_and_gradients(tiny, rows, monkeypatch):
    r = grouped_rollout(tiny)
    ids, mask, comp, cmask = r.input_ids, r.attention_mask, r.completion_ids, r.completion_mask.clone()
    tc = comp.size(1)
    if rows == "distinct":  # one row per prompt: nothing to share, padding still dropped
        ids, mask, comp, cmask = ids[::3], mask[::3], comp[::3], cmask[::3]
    if rows == "ragged":  # a micro-batch that cuts groups: runs of 2, 3, 1
        ids, mask, comp, cmask = ids[1:7], mask[1:7], comp[1:7], cmask[1:7]
    if rows in ("stopped", "split"):  # completions that ended early (as at an EOS), one after 1 token
        for row, length in enumerate([10, 3, 7, 1, 10, 5, 2, 10, 9]):
            cmask[row, length:] = 0
        mask[:, -tc:] = cmask
    if rows == "split":  # sequences capped below a group's size: each group spreads over several
        monkeypatch.setattr(packing, "MAX_PACKED_TOKENS", 40)
        assert len(packing.pack(ids, mask, tc, packing.token_pair_ratio(tiny.model)).input_ids) > 3
    fed = []  # shapes of the hidden states entering the first block
    hook = tiny.model.model.layers[0].register_forward_pre_hook(lambda m, args: fed.append(args[0].shape[:2]))
    model = tiny.model
    got = weighted_loss_and_grads(model, lambda: completion_forward(model, ids, mask, tc, 0.7, hidden=True),
                                  comp, cmask)
    hook.remove()
    want = weighted_loss_and_grads(model, lambda: plain_forward(model, ids, mask, tc, 0.7), comp, cmask)
    assert_same(got, want)
    layout = packing.pack(ids, mask, tc, packing.token_pair_ratio(model))
    assert fed == [layout.input_ids.shape]  # one pass over the packed sequences
    if rows != "split":  # real tokens fed: each run's prompt once, each completion but its last token
        prompt_ids, prompt_mask = ids[:, :-tc], mask[:, :-tc]
        new_run = torch.ones(len(ids), dtype=torch.bool)
        new_run[1:] = ~((prompt_ids[1:] == prompt_ids[:-1]) & (prompt_mask[1:] == prompt_mask[:-1])).all(-1)
        expected = prompt_mask[new_run].sum() + (cmask.sum(-1) - 1).clamp(min=0).sum()
        assert layout.segments.ge(0).sum() == expected


def test_packed_forward_with_eager_attention_takes_an_additive_mask(tiny):
    r = grouped_rollout(tiny)
    model, ids, mask, tc = tiny.model, r.input_ids, r.attention_mask, r.completion_ids.size(1)
    model.config._attn_implementation = "eager"
    try:
        got = weighted_loss_and_grads(model, lambda: completion_forward(model, ids, mask, tc, hidden=True),
                                      r.completion_ids, r.completion_mask)
    finally:
        model.config._attn_implementation = "sdpa"
    want = weighted_loss_and_grads(model, lambda: plain_forward(model, ids, mask, tc),
                                   r.completion_ids, r.completion_mask)
    assert_same(got, want)


def test_tied_embedding_gradient_accumulates_over_micro_batches_like_autograd(tiny):
    """The lookup's gradient is added in place into the tied weight's: over two backward passes (two
    micro-batches, no zero_grad between) it equals the plain forward's, and a frozen weight gets none."""
    r = grouped_rollout(tiny)
    tc, model = r.completion_ids.size(1), tiny.model
    weight = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is weight
    grads = []
    for forward in (completion_forward, plain_forward):
        model.zero_grad(set_to_none=True)
        for rows in (slice(0, 4), slice(4, 9)):
            logits = forward(model, r.input_ids[rows], r.attention_mask[rows], tc)[0]
            (token_logprobs(logits, r.completion_ids[rows]) * r.completion_mask[rows]).sum().backward()
        grads.append(weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    model.zero_grad(set_to_none=True)
    weight.requires_grad_(False)
    try:
        logits = completion_forward(model, r.input_ids, r.attention_mask, tc)[0]
        token_logprobs(logits, r.completion_ids).sum().backward()
        assert weight.grad is None
    finally:
        weight.requires_grad_(True)


def test_unpacked_forward_is_the_plain_forward(tiny):
    r = grouped_rollout(tiny)
    tc = r.completion_ids.size(1)
    ids, mask = r.input_ids, r.attention_mask
    with torch.no_grad():
        got, states = completion_forward(tiny.model, ids, mask, tc, hidden=True, packed=False)
        want, want_states = plain_forward(tiny.model, ids, mask, tc)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(states, want_states, atol=1e-5, rtol=1e-4)


def test_packed_forward_through_a_lora_adapter(tiny):
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
        (token_logprobs(logits, r.completion_ids) * r.completion_mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_one_token_prompts_and_an_empty_completion(tiny):
    ids = torch.tensor([[5, 6, 7], [5, 8, 9], [4, 8, 9], [4, 1, 1]])
    mask = torch.ones_like(ids)
    mask[3, 1:] = 0  # a completion with no token at all
    layout = packing.pack(ids, mask, 2)
    assert layout.input_ids.tolist() == [[5, 6, 8], [0, 4, 8]]  # [5] once, then 6 and 8; [4] then 8
    assert layout.position_ids.tolist() == [[0, 1, 1], [0, 0, 1]]
    with torch.no_grad():
        got, _ = completion_forward(tiny.model, ids, mask, 2)
        want, _ = plain_forward(tiny.model, ids, mask, 2)
    torch.testing.assert_close(got[:3], want[:3], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(got).all()


def test_sequences_stop_where_more_attention_pairs_cost_more_than_the_prompt_saves(tiny):
    """Many short completions of a 1-token prompt on the toy (ratio ~145): ~1 + sqrt(146) = 13 tokens a
    sequence, 4 completions of 3 fed tokens each, not all 64 in one 193-token sequence."""
    ids = torch.cat([torch.full((64, 1), 7), torch.randint(3, 200, (64, 4))], dim=1)
    ratio = packing.token_pair_ratio(tiny.model)
    assert 100 < ratio < 200
    layout = packing.pack(ids, torch.ones_like(ids), 4, ratio)
    assert layout.input_ids.shape == (16, 13)
    assert packing.pack(ids, torch.ones_like(ids), 4).input_ids.shape == (1, 1 + 64 * 3)  # no limit


def test_a_row_without_a_prompt_token_is_refused(tiny):
    ids = torch.tensor([[0, 6, 7]])
    with pytest.raises(ValueError, match="row 0 has no prompt token"):
        packing.pack(ids, torch.tensor([[0, 1, 1]]), 2)


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
