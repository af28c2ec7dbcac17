"""Text-generation metrics: diversity, repetition, length, overlap with references and perplexity.

The set text-generation papers report (RL4LMs ships the same): distinct-n (Li et al. 2016), self-BLEU
(Zhu et al. 2018, Texygen), a repetition rate, the mean length, corpus BLEU and chrF (sacreBLEU), ROUGE
(``rouge_score``) and the perplexity of the completions under a reference causal LM.

Every score is a plain float; BLEU, self-BLEU and chrF are scaled from sacreBLEU's 0-100 to [0, 1].
The word-level metrics (distinct-n, repetition, length) share one tokenisation, :func:`words`. Bad input
raises ``ValueError`` with a one-line message that names the argument, its value and the fix.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WORD = re.compile(r"\w+|[^\w\s]")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
NGram = tuple[str, ...]


# --- input checks -------------------------------------------------------------------------------------------


def short(value: Any) -> str:
    """A one-line, length-limited repr of ``value`` for error messages."""
    return reprlib.repr(value)


def check_texts(texts: Sequence[str], name: str = "texts") -> None:
    """Raise unless ``texts`` is a non-empty sequence of strings."""
    if isinstance(texts, str):
        raise ValueError(f"{name} = {short(texts)}: pass a list of strings, not one string (e.g. [{short(texts)}])")
    if len(texts) == 0:
        raise ValueError(f"{name} = []: give at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{i}] = {short(text)}: every item must be a string; decode or str() it first")


def check_order(n: int, name: str = "n") -> None:
    """Raise unless the n-gram order ``n`` is at least 1."""
    if n < 1:
        raise ValueError(f"{name} = {n}: n-grams need an order of at least 1; pass {name} >= 1")


def check_same_length(first: Sequence[Any], first_name: str, second: Sequence[Any], second_name: str) -> None:
    """Raise unless ``first`` and ``second`` have one item each per pair."""
    if len(first) != len(second):
        raise ValueError(f"{second_name} has {len(second)} items but {first_name} has {len(first)}: "
                         f"give one item of {second_name} per item of {first_name}")


def check_references(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                     name: str = "hypotheses") -> None:
    """Raise unless ``references`` holds one non-empty list of reference strings per hypothesis (``name``: what
    the hypotheses are called in the caller's signature)."""
    check_texts(hypotheses, name)
    if isinstance(references, str):
        raise ValueError(f"references = {short(references)}: pass one list of reference strings per hypothesis, "
                         f"e.g. [[{short(references)}]]")
    check_same_length(hypotheses, name, references, "references")
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            raise ValueError(f"references[{i}] = {short(refs)}: each hypothesis takes a list of reference strings; "
                             f"wrap it: [{short(refs)}]")
        check_texts(refs, f"references[{i}]")


# --- word-level metrics -------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``: runs of word characters, each other non-space character alone.

    ``re.findall(r"\\w+|[^\\w\\s]", text.lower())``: ``"Don't stop!"`` -> ``["don", "'", "t", "stop", "!"]``.
    """
    return WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[NGram]:
    """The ``len(tokens) - n + 1`` contiguous n-grams of ``tokens``, in order (none when it is shorter)."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams / total n-grams, pooled over all ``texts``.

    N-grams are over :func:`words` and never cross from one text to the next. 0.0 when no text has
    ``n`` words.
    """
    check_texts(texts)
    check_order(n)
    grams = [gram for text in texts for gram in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: Sequence[str], n: int = 4) -> float:
    """Mean over ``texts`` of the fraction of each text's n-grams that repeat an earlier n-gram of the same text.

    For one text with ``T`` n-grams (over :func:`words`) of which ``U`` are distinct, that is ``(T - U) / T``:
    0 when no n-gram recurs, near 1 for text stuck in a loop (``"a b a b a b"`` with n = 2: 3 of its 5
    bigrams repeat, 0.6). A text with fewer than ``n`` words repeats nothing and counts as 0.
    """
    check_texts(texts)
    check_order(n)
    rates = []
    for text in texts:
        grams = ngrams(words(text), n)
        rates.append((len(grams) - len(set(grams))) / len(grams) if grams else 0.0)
    return sum(rates) / len(rates)


def mean_length(texts: Sequence[str]) -> float:
    """Mean number of :func:`words` per text (punctuation marks count as words)."""
    check_texts(texts)
    return sum(len(words(text)) for text in texts) / len(texts)


# --- BLEU, chrF, ROUGE --------------------------------------------------------------------------------------


def unit(score: float) -> float:
    """A sacreBLEU 0-100 score on [0, 1] (clipped: a perfect match comes out a rounding error above 100)."""
    return min(max(score / 100.0, 0.0), 1.0)


def self_bleu(texts: Sequence[str], max_order: int = 4) -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen): the mean over ``texts`` of the sentence BLEU of each text with
    all the other texts as its references; higher means less diverse.

    Sentence BLEU is sacreBLEU's (``BLEU(max_ngram_order=max_order, effective_order=True)``: 13a
    tokenisation, case-sensitive, exponential smoothing), on [0, 1]. It takes ``len(texts) ** 2`` n-gram
    comparisons.
    """
    check_texts(texts)
    if len(texts) < 2:
        raise ValueError(f"texts has {len(texts)} item: self-BLEU compares each text with the others; "
                         "give at least 2 texts")
    check_order(max_order, "max_order")
    metric = BLEU(max_ngram_order=max_order, effective_order=True)
    scores = [unit(metric.sentence_score(text, [*texts[:i], *texts[i + 1:]]).score) for i, text in enumerate(texts)]
    return sum(scores) / len(scores)


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """sacreBLEU's layout of ``references``: stream ``k`` holds the k-th reference of every hypothesis, None
    where a hypothesis has fewer (sacreBLEU skips those)."""
    width = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    return cast(list[list[str]], streams)


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU of ``hypotheses`` against ``references`` (one list of reference strings per hypothesis,
    any number each), on [0, 1].

    sacreBLEU's defaults (``BLEU()``: 4-gram, 13a tokenisation, case-sensitive), the score papers report.
    """
    check_references(hypotheses, references)
    return unit(BLEU().corpus_score(list(hypotheses), reference_streams(references)).score)


def chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF of ``hypotheses`` against ``references`` (one list of reference strings per hypothesis),
    on [0, 1]: sacreBLEU's defaults (``CHRF()``: character 6-grams, beta = 2)."""
    check_references(hypotheses, references)
    return unit(CHRF().corpus_score(list(hypotheses), reference_streams(references)).score)


def rouge(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures of ``hypotheses`` (keys ``rouge1``, ``rouge2``, ``rougeL``).

    ``rouge_score``'s ``RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)`` (lower-cased
    alphanumeric tokens, Porter-stemmed). Each hypothesis takes, for each of the three, its best F-measure
    over its references; the three are then averaged over the hypotheses.
    """
    check_references(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        scores = [scorer.score(ref, hypothesis) for ref in refs]  # score(target, prediction)
        for kind in ROUGE_TYPES:
            totals[kind] += max(float(score[kind].fmeasure) for score in scores)
    return {kind: total / len(hypotheses) for kind, total in totals.items()}


# --- perplexity ---------------------------------------------------------------------------------------------


def pair_tokens(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                completions: Sequence[str]) -> list[tuple[list[int], int]]:
    """Per pair, the token ids of prompt + completion and the number of completion tokens.

    The prompt is tokenised as the tokenizer does by default (with its BOS token, if it adds one), the
    completion separately and without special tokens, so the scored tokens are exactly the completion's.
    """
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        if completion_ids and not prompt_ids:
            raise ValueError(f"prompts[{i}] = {short(prompt)} has no tokens, so the first completion token has no "
                             "context to be scored in: give a non-empty prompt")
        rows.append((prompt_ids + completion_ids, len(completion_ids)))
    return rows


def batch_nll(model: PreTrainedModel, rows: Sequence[tuple[list[int], int]], pad_id: int) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the completion tokens of ``rows`` and how many there are.

    The rows are left-padded into one batch; position ids follow the attention mask, so a padded row
    sees the positions it would see alone.
    """
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (ids, completion_len) in enumerate(rows):
        input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[i, width - len(ids):] = 1
        scored[i, width - completion_len:] = True  # an empty slice when completion_len is 0
    if not scored.any():
        return 0.0, 0
    device = model.device
    input_ids, mask, scored = input_ids.to(device), mask.to(device), scored.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # Position t predicts token t + 1: the last token predicts nothing scored.
    logits = model(input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1]).logits
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    target = scored[:, 1:]
    return float(-logp[target].sum()), int(target.sum())


def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
               completions: Sequence[str], batch_size: int = 8) -> float:
    """Corpus perplexity of ``completions`` given their ``prompts`` under the causal LM ``model``.

    ``exp(sum of the completion tokens' negative log-likelihoods / number of completion tokens)``, pooled
    over all pairs (so long completions weigh more than short ones; not the mean of per-text
    perplexities). Each completion token is scored given its prompt and the completion tokens before it;
    prompt tokens are not scored. Runs ``batch_size`` pairs per forward pass, left-padded, under
    ``torch.inference_mode()`` with the model in eval mode (its training mode is restored afterwards).
    """
    check_texts(prompts, "prompts")
    check_texts(completions, "completions")
    check_same_length(prompts, "prompts", completions, "completions")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: pass batch_size >= 1")
    rows = pair_tokens(tokenizer, prompts, completions)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # padding is masked out
    nll, count = 0.0, 0
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch_sum, batch_count = batch_nll(model, rows[start:start + batch_size], pad_id)
                nll, count = nll + batch_sum, count + batch_count
    finally:
        model.train(training)
    if count == 0:
        raise ValueError(f"completions = {short(completions)}: every completion is empty, so there is nothing to "
                         "score; give at least one non-empty completion")
    return math.exp(nll / count)


# --- all together -------------------------------------------------------------------------------------------


def text_metrics(texts: Sequence[str], model: PreTrainedModel | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None, prompts: Sequence[str] | None = None,
                 references: Sequence[Sequence[str]] | None = None) -> dict[str, float]:
    """The metrics of generated ``texts`` in one dict.

    Always ``distinct_1``, ``distinct_2``, ``self_bleu`` (needs 2 texts or more), ``repetition_rate``
    (4-grams) and ``mean_length``; with ``model`` (and its ``tokenizer`` and the ``prompts`` the texts
    complete) also ``perplexity``; with ``references`` (one list of reference strings per text) also
    ``bleu``, ``chrf``, ``rouge1``, ``rouge2`` and ``rougeL``.
    """
    check_texts(texts)
    if model is None and (tokenizer is not None or prompts is not None):
        raise ValueError("model = None but tokenizer or prompts were given: they only serve perplexity; "
                         "pass model= as well, or drop them")
    if model is not None:
        if tokenizer is None:
            raise ValueError("tokenizer = None: perplexity needs the model's tokenizer; pass tokenizer=")
        if prompts is None:
            raise ValueError("prompts = None: perplexity scores each text given its prompt; pass prompts= "
                             "(one per text)")
        check_same_length(texts, "texts", prompts, "prompts")
    if references is not None:
        check_references(texts, references, "texts")
    result = {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "self_bleu": self_bleu(texts),
        "repetition_rate": repetition_rate(texts),
        "mean_length": mean_length(texts),
    }
    if model is not None and tokenizer is not None and prompts is not None:
        result["perplexity"] = perplexity(model, tokenizer, prompts, texts)
    if references is not None:
        result["bleu"] = bleu(texts, references)
        result["chrf"] = chrf(texts, references)
        result.update(rouge(texts, references))
    return result
