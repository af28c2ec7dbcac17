"""Tier 2: sampling on a tiny model agrees with teacher-forced forward passes."""

import torch

from langrl.envs.prompts import encode, left_pad
from langrl.models.cache import cache_kwargs, output_cache
from langrl.models.forward import completion_logits, token_logprobs
from langrl.rollout import SamplingConfig, sample


def rollout(lm, prompts, group_size=3, max_new_tokens=12, seed=0, **kw):
    ids, mask = left_pad(encode(prompts, lm.tokenizer, chat=True), lm.tokenizer.pad_token_id,
                         torch.device("cpu"))
    config = SamplingConfig(max_new_tokens=max_new_tokens, group_size=group_size, **kw)
    gen = torch.Generator().manual_seed(seed)
    return sample(lm.model, ids, mask, config, lm.tokenizer.eos_token_id, lm.tokenizer.pad_token_id, gen)


def test_shapes_and_group_order(tiny):
    r = rollout(tiny, ["a", "a longer prompt"], group_size=3)
    assert r.completion_ids.shape[0] == 6 and r.prompt_ids.shape[0] == 6
    # rows 0-2 share prompt 0, rows 3-5 share prompt 1 (prompt-major order)
    assert torch.equal(r.prompt_ids[0], r.prompt_ids[2]) and torch.equal(r.prompt_ids[3], r.prompt_ids[5])
    assert not torch.equal(r.prompt_ids[0], r.prompt_ids[3])


def test_sampled_logprobs_equal_a_teacher_forced_pass(tiny):
    """The KV-cached, shared-prompt sampler must record the same log-probs as one full forward pass,
    with left padding (prompts of different lengths) and temperature."""
    r = rollout(tiny, ["hi", "a much longer prompt here"], group_size=2, temperature=0.7)
    with torch.no_grad():
        logits = completion_logits(tiny.model, r.input_ids, r.attention_mask, r.completion_ids.size(1), 0.7)
    forward = token_logprobs(logits, r.completion_ids) * r.completion_mask
    torch.testing.assert_close(r.logprobs, forward, atol=1e-5, rtol=1e-4)


def test_stops_each_sequence_at_eos(tiny):
    eos = tiny.tokenizer.eos_token_id
    # Make EOS likely so that some sequences stop early.
    bias = torch.zeros(tiny.model.config.vocab_size)
    bias[eos] = 4.0
    handle = tiny.model.lm_head.register_forward_hook(lambda m, i, out: out + bias)
    try:
        r = rollout(tiny, ["x", "y"], group_size=4, max_new_tokens=20)
    finally:
        handle.remove()
    for ids, mask, logp in zip(r.completion_ids, r.completion_mask, r.logprobs, strict=True):
        length = int(mask.sum())
        assert mask[:length].all(), "the mask is a prefix"
        if length < ids.numel():
            assert ids[length - 1] == eos, "the last kept token is the EOS"
            assert (ids[length:] == tiny.tokenizer.pad_token_id).all()
            assert (logp[length:] == 0).all()
    assert (r.completion_mask.sum(-1) < 20).any()


def test_same_seed_same_samples(tiny):
    a, b = rollout(tiny, ["x"], seed=3), rollout(tiny, ["x"], seed=3)
    assert torch.equal(a.completion_ids, b.completion_ids)
    c = rollout(tiny, ["x"], seed=4)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_top_k_one_is_greedy(tiny):
    r = rollout(tiny, ["x"], group_size=2, top_k=1)
    assert torch.equal(r.completion_ids[0], r.completion_ids[1])


def test_draw_follows_the_distribution_and_skips_zero_probability_entries():
    from langrl.rollout.tokens import draw

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(20000, 1)
    tokens = draw(probs, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=6).float() / len(tokens)
    assert counts[[0, 2, 5]].sum() == 0
    torch.testing.assert_close(counts, probs[0], atol=0.015, rtol=0)


def test_lean_llama_decoder_matches_the_model_forward(tiny):
    """LlamaDecoder (packed fused weights, preallocated cache) gives the model's logits and final hidden
    state at every step, with left-padded prompts; LoRA wrappers are refused outside merged_lora."""
    from transformers import DynamicCache

    from langrl.models import apply_lora
    from langrl.rollout.llama_decode import LlamaDecoder, supports

    model = tiny.model.eval()
    assert supports(model)
    ids, mask = left_pad(encode(["hi", "a much longer prompt"], tiny.tokenizer, chat=True),
                         tiny.tokenizer.pad_token_id, torch.device("cpu"))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    tokens = torch.randint(0, model.config.vocab_size, (2, 5))
    with torch.inference_mode():
        cache = output_cache(model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                   **cache_kwargs(model, DynamicCache()), use_cache=True))
        lean = LlamaDecoder(model, cache, mask, steps=5)
        for i in range(5):
            logits, hidden = lean.step(tokens[:, i], positions[:, -1:] + 1 + i)
            full = torch.cat([ids, tokens[:, : i + 1]], 1)
            full_mask = torch.cat([mask, torch.ones_like(tokens[:, : i + 1])], 1)
            out = model(input_ids=full, attention_mask=full_mask, output_hidden_states=True,
                        position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0))
            torch.testing.assert_close(logits, out.logits[:, -1], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(hidden, out.hidden_states[-1][:, -1], atol=1e-4, rtol=1e-4)
    assert not supports(apply_lora(model, r=2, alpha=4, dropout=0.0, target_modules="all-linear"))
