"""Tier 1: the text-generation metrics of `langrl.eval.metrics` against values counted by hand on tiny texts,
their error messages, and perplexity against an unbatched loop on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from langrl.eval.metrics import (
    bleu,
    chrf,
    distinct_n,
    mean_length,
    perplexity,
    repetition_rate,
    rouge,
    self_bleu,
    text_metrics,
    words,
)
from langrl.models.tiny import tiny_tokenizer


def test_words_lower_cases_and_splits_punctuation_off():
    assert words("Don't stop, OK?") == ["don", "'", "t", "stop", ",", "ok", "?"]
    assert words("  ") == []


def test_distinct_n_counted_by_hand():
    texts = ["the cat sat", "The cat ran"]
    # unigrams: the cat sat the cat ran -> 6 in all, {the, cat, sat, ran} 4 distinct
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) -> 4 in all, 3 distinct; none spans the two texts
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    # punctuation marks are words: hi , hi ! -> 3 distinct of 4
    assert distinct_n(["Hi, hi!"], 1) == pytest.approx(3 / 4)
    # no text has 3 words: no trigram at all
    assert distinct_n(["a b", "c"], 3) == 0.0


def test_repetition_rate_of_a_loop():
    # a b a b a b, bigrams: ab ba ab ba ab -> 5, of which 2 distinct: 3 repeat an earlier one
    assert repetition_rate(["a b a b a b"], n=2) == pytest.approx(3 / 5)
    # 4-grams: abab baba abab -> 3, 2 distinct: 1 repeat
    assert repetition_rate(["a b a b a b"]) == pytest.approx(1 / 3)
    # unigrams: 6, {a, b}: 4 repeats
    assert repetition_rate(["a b a b a b"], n=1) == pytest.approx(4 / 6)
    # averaged over texts: x y z repeats nothing, and a 1-word text (no bigram) counts as 0
    assert repetition_rate(["a b a b a b", "x y z", "solo"], n=2) == pytest.approx((3 / 5 + 0 + 0) / 3)
    # repeats are within a text: the same bigram in two texts is no repetition
    assert repetition_rate(["a b", "a b"], n=2) == 0.0


def test_mean_length_in_words():
    # a b c -> 3; hello , world ! -> 4
    assert mean_length(["a b c", "Hello, world!"]) == pytest.approx(3.5)
    assert mean_length([""]) == 0.0


def test_self_bleu_by_hand():
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0)
    assert self_bleu(["a b c d", "e f g h"]) == 0.0
    # "the cat sat" against "the cat ran" (and the other way round, symmetric): 1-grams 2/3 match, 2-grams
    # 1/2, 3-grams 0/1, smoothed by sacreBLEU's 'exp' to 1 / (2 * 1); no 4-gram, so the effective order is
    # 3; equal lengths, no brevity penalty: (2/3 * 1/2 * 1/2) ** (1/3)
    assert self_bleu(["the cat sat", "the cat ran"]) == pytest.approx((1 / 6) ** (1 / 3))
    # max_order = 1: unigram precision alone, 2/3
    assert self_bleu(["the cat sat", "the cat ran"], max_order=1) == pytest.approx(2 / 3)


def test_corpus_bleu_by_hand():
    assert bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(1.0)
    # hypothesis "the cat sat on the mat", reference "the cat sat on a mat": 1-grams 5/6 (one "the" too
    # many), 2-grams 3/5 (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3; same length, no brevity penalty
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** (1 / 4)
    assert bleu(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(expected)
    # several references: the exact one counts, a different number of references per hypothesis is fine
    both = bleu(["the cat sat on the mat", "a dog ran in the park"],
                [["a dog ran", "the cat sat on the mat"], ["a dog ran in the park"]])
    assert both == pytest.approx(1.0)


def test_chrf_by_hand():
    assert chrf(["the cat sat"], [["the cat sat"]]) == pytest.approx(1.0)
    assert chrf(["abc"], [["xyz"]]) == 0.0
    assert chrf(["abc"], [["xyz", "abc"]]) == pytest.approx(1.0)


def test_rouge_by_hand():
    # hypothesis the cat sat on the mat, reference the cat is on the mat:
    # rouge1: shared unigrams the x2, cat, on, mat = 5 of 6 each side -> F = 5/6
    # rouge2: hypothesis bigrams the-cat cat-sat sat-on on-the the-mat; shared the-cat on-the the-mat -> 3/5
    # rougeL: longest common subsequence the cat on the mat = 5 of 6 -> 5/6
    scores = rouge(["the cat sat on the mat"], [["the cat is on the mat"]])
    assert scores == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6})
    # the best reference per hypothesis; the stemmer maps cats -> cat, running / runs -> run
    assert rouge(["the cat sat on the mat"], [["dog", "the cat is on the mat"]]) == pytest.approx(scores)
    assert rouge(["Cats running"], [["cat runs"]])["rouge1"] == pytest.approx(1.0)
    # averaged over hypotheses: (1 + 0) / 2
    assert rouge(["a b", "c d"], [["a b"], ["x y"]])["rouge2"] == pytest.approx(0.5)


def test_text_metrics_keys_and_values():
    texts = ["the cat sat", "the cat ran"]
    result = text_metrics(texts, references=[["the cat sat"], ["the cat ran"]])
    assert set(result) == {"distinct_1", "distinct_2", "self_bleu", "repetition_rate", "mean_length", "bleu", "chrf",
                           "rouge1", "rouge2", "rougeL"}
    assert result["distinct_1"] == pytest.approx(4 / 6)
    assert result["distinct_2"] == pytest.approx(3 / 4)
    assert result["mean_length"] == pytest.approx(3.0)
    assert result["repetition_rate"] == 0.0
    assert result["rouge1"] == pytest.approx(1.0)
    assert set(text_metrics(texts)) == {"distinct_1", "distinct_2", "self_bleu", "repetition_rate", "mean_length"}


@pytest.mark.parametrize(("call", "message"), [
    (lambda: distinct_n([], 1), r"^texts = \[\]: give at least one text$"),
    (lambda: distinct_n(["a b"], 0), r"^n = 0: .*pass n >= 1$"),
    (lambda: repetition_rate(["a b"], n=-1), r"^n = -1: "),
    (lambda: mean_length("a b"), r"^texts = 'a b': pass a list of strings"),
    (lambda: distinct_n(["a", 3], 1), r"^texts\[1\] = 3: every item must be a string"),
    (lambda: self_bleu(["a b"]), r"^texts has 1 item: .*give at least 2 texts$"),
    (lambda: self_bleu(["a", "b"], max_order=0), r"^max_order = 0: "),
    (lambda: bleu(["a", "b"], [["a"]]), r"^references has 1 items but hypotheses has 2: give one item"),
    (lambda: chrf(["a"], ["a"]), r"^references\[0\] = 'a': .*wrap it: \['a'\]$"),
    (lambda: rouge(["a"], [[]]), r"^references\[0\] = \[\]: give at least one text$"),
    (lambda: bleu([], []), r"^hypotheses = \[\]: "),
    (lambda: text_metrics(["a", "b"], prompts=["p", "q"]), r"^model = None but tokenizer or prompts"),
    (lambda: text_metrics(["a", "b"], references=[["a"]]), r"^references has 1 items but texts has 2"),
])
def test_bad_input_raises_one_line_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# --- perplexity ---------------------------------------------------------------------------------------------

PROMPTS = ["Say hello", "a", "A much longer prompt than the others, to pad", "xy"]
COMPLETIONS = [" world", "bcdefghij", "!", " zz top"]


def unbatched_nll(model, tokenizer, prompt, completion):
    """Summed NLL of the completion tokens and their count, one pair at a time, no padding."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    nll = -sum(logp[t - 1, ids[0, t]].item() for t in range(len(prompt_ids), ids.size(1)))
    return nll, len(completion_ids)


def tiny_gpt2():
    """A 1-layer GPT-2 on the tiny byte tokenizer: learned absolute positions, so a left-padded row scores
    differently unless its position ids follow the attention mask (the tiny Llama's RoPE hides such a shift)."""
    tokenizer = tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=128,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return GPT2LMHeadModel(config), tokenizer


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_perplexity_equals_the_unbatched_loop(tiny, architecture, batch_size):
    model, tokenizer = (tiny.model, tiny.tokenizer) if architecture == "llama" else tiny_gpt2()
    model.eval()
    pairs = [unbatched_nll(model, tokenizer, p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    expected = math.exp(sum(nll for nll, _ in pairs) / sum(count for _, count in pairs))
    got = perplexity(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size)
    assert got == pytest.approx(expected, rel=1e-5)
    # the corpus perplexity pools tokens: not the mean of the per-pair perplexities
    assert got != pytest.approx(sum(math.exp(nll / count) for nll, count in pairs) / len(pairs), rel=1e-3)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tiny):
    # A zero LM head (tied to the embedding here) makes every logit 0: each token has probability 1/259.
    torch.nn.init.zeros_(tiny.model.get_output_embeddings().weight)
    assert perplexity(tiny.model, tiny.tokenizer, PROMPTS, COMPLETIONS) == pytest.approx(len(tiny.tokenizer))


def test_perplexity_leaves_the_mode_and_skips_empty_completions(tiny):
    tiny.model.train()
    alone = perplexity(tiny.model, tiny.tokenizer, ["ab"], ["cd"])
    assert tiny.model.training
    # an empty completion adds no token: the corpus perplexity is that of the other pair
    assert perplexity(tiny.model, tiny.tokenizer, ["ab", "xyz"], ["cd", ""], batch_size=2) == pytest.approx(alone)


def test_perplexity_errors(tiny):
    model, tokenizer = tiny.model, tiny.tokenizer
    with pytest.raises(ValueError, match=r"^completions has 1 items but prompts has 2"):
        perplexity(model, tokenizer, ["a", "b"], ["c"])
    with pytest.raises(ValueError, match=r"^prompts\[0\] = '' has no tokens.*give a non-empty prompt$"):
        perplexity(model, tokenizer, [""], ["c"])
    with pytest.raises(ValueError, match=r"^completions = \[''\]: every completion is empty"):
        perplexity(model, tokenizer, ["a"], [""])
    with pytest.raises(ValueError, match=r"^batch_size = 0: "):
        perplexity(model, tokenizer, ["a"], ["b"], batch_size=0)
    with pytest.raises(ValueError, match=r"^tokenizer = None: "):
        text_metrics(["a", "b"], model=model, prompts=["p", "q"])
    with pytest.raises(ValueError, match=r"^prompts = None: "):
        text_metrics(["a", "b"], model=model, tokenizer=tokenizer)


def test_text_metrics_with_a_model(tiny):
    texts = COMPLETIONS
    result = text_metrics(texts, model=tiny.model, tokenizer=tiny.tokenizer, prompts=PROMPTS)
    assert result["perplexity"] == pytest.approx(perplexity(tiny.model, tiny.tokenizer, PROMPTS, texts))
    assert "bleu" not in result

