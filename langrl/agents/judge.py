"""An LM as a reward: ask it a yes/no question and read P(yes) from its next-token distribution.

The answer is never sampled. With ``Y`` and ``N`` the first tokens of the yes and no words (``Yes``,
``yes``, `` yes``...), the score is read from the logits ``l`` at the end of the question:

    log_odds = logsumexp(l[Y]) - logsumexp(l[N]),     P(yes) = sigmoid(log_odds)

i.e. P(yes) normalised over the yes/no tokens only (as in "LLM-as-a-judge" rewards, e.g. Kwon et al.
2023, "Reward Design with Language Models"). Results are cached by the full question text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from langrl.agents.cache import LRUCache
from langrl.models.loading import LM

Output = Literal["prob", "logodds"]
COMPLETION_TEMPLATE = "Prompt: {prompt}\nResponse: {completion}\n\n{question} Answer yes or no."
YES = ("Yes", "yes")
NO = ("No", "no")


def answer_token_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> set[int]:
    """First token ids of each word, bare and after a space (the answer may follow either)."""
    ids = set()
    for word in words:
        for variant in (word, " " + word):
            tokens = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if tokens:
                ids.add(int(tokens[0]))
    return ids


def yes_no_log_odds(last_logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> torch.Tensor:
    """(B, V) next-token logits -> (B,) ``logsumexp(l[yes]) - logsumexp(l[no])``."""
    logits = last_logits.float()
    return torch.logsumexp(logits[:, list(yes_ids)], -1) - torch.logsumexp(logits[:, list(no_ids)], -1)


class LMJudge:
    """A yes/no LM judge; as a `RewardFn` it scores ``(prompt, completion)`` pairs with ``template``.

    ``output``: ``prob`` gives P(yes) in [0, 1]; ``logodds`` gives ``log P(yes) - log P(no)``.
    ``chat`` (default: when the tokenizer has a chat template) sends the question as a user turn and
    reads the first token of the assistant's answer. Yes/no tokens shared by both word lists (a
    byte-level tokenizer's leading space) are dropped; none left on a side is an error.
    """

    def __init__(self, lm: LM, question: str = "Is the response good?", template: str = COMPLETION_TEMPLATE,
                 output: Output = "prob", yes: Sequence[str] = YES, no: Sequence[str] = NO,
                 chat: bool | None = None, batch_size: int = 16, cache_size: int = 100_000):
        if output not in ("prob", "logodds"):
            raise ValueError(f"output = {output!r}; use 'prob' or 'logodds'")
        self.lm = lm
        self.question = question
        self.template = template
        self.output: Output = output
        self.chat = bool(lm.tokenizer.chat_template) if chat is None else chat
        self.batch_size = batch_size
        yes_ids, no_ids = answer_token_ids(lm.tokenizer, yes), answer_token_ids(lm.tokenizer, no)
        self.yes_ids, self.no_ids = sorted(yes_ids - no_ids), sorted(no_ids - yes_ids)
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"the yes words {list(yes)} and no words {list(no)} share all their first "
                             f"tokens in this tokenizer; give words that start differently")
        self.cache: LRUCache[str, float] = LRUCache(cache_size)
        self.name = f"lm_judge({lm.name})"
        self.forward_calls = 0

    def render(self, text: str) -> str:
        """The exact string the LM reads for one question."""
        if not self.chat:
            return text + "\nAnswer:"
        return cast(str, self.lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                               add_generation_prompt=True))  # str: tokenize=False

    @torch.no_grad()
    def forward_log_odds(self, rendered: list[str]) -> list[float]:
        """One left-padded batch -> log-odds per text. Position ids follow the mask, so that a padded
        row gives the same logits as the row alone."""
        tok = self.lm.tokenizer
        self.forward_calls += 1
        batch = tok(rendered, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=not self.chat)
        device = self.lm.model.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                               logits_to_keep=1).logits[:, -1]
        return yes_no_log_odds(logits, self.yes_ids, self.no_ids).cpu().tolist()

    def log_odds(self, texts: Sequence[str]) -> np.ndarray:
        """(B,) log-odds of yes for fully written questions; each distinct text is computed once."""
        rendered = [self.render(t) for t in texts]
        values = {r: self.cache.get(r) for r in dict.fromkeys(rendered)}
        missing = [r for r, v in values.items() if v is None]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            for text, value in zip(chunk, self.forward_log_odds(chunk), strict=True):
                self.cache.put(text, value)
                values[text] = value
        return np.asarray([values[r] for r in rendered], dtype=np.float64)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(B,) rewards for fully written questions: P(yes) or the log-odds, as ``output`` says."""
        lo = self.log_odds(texts)
        return 0.5 * (1.0 + np.tanh(lo / 2.0)) if self.output == "prob" else lo  # sigmoid, overflow-free

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        """The `RewardFn` interface: one score per (prompt, completion) pair."""
        texts = [self.template.format(question=self.question, prompt=p, completion=c)
                 for p, c in zip(prompts, completions, strict=True)]
        return self.score(texts).tolist()
