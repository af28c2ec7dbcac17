"""An LM as the policy of an agent: it scores the admissible action strings (GLAM, Carta et al. 2023).

The prompt is the text of the current observation preceded by a short window of earlier observations and
actions (:func:`render_history`), filled into the template of `LMActionPrior` (the list of actions, then
the history, then "Your next action:"; a chat turn when the tokenizer has a chat template). The policy's
logits over the A actions are the summed token log-probabilities of each action string after the prompt,
``pi(a | x) = softmax_a log p_LM(a | x)``; the value is a linear head on the prompt's final hidden state.
Built on a pretrained LM with no training, the policy *is* the zero-shot prior `LMActionPrior`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from langrl.agents.prior import PRIOR_TEMPLATE, LMActionPrior
from langrl.agents.scoring import score_actions
from langrl.models.loading import LM
from langrl.models.value import ValueHead
from langrl.protocols import Decision


class LMPolicy(nn.Module):
    """Action-scoring LM policy with a value head; ``model`` may be a LoRA-wrapped (PEFT) model.

    ``window``: how many earlier (observation, action) pairs the prompt shows. ``template``, ``chat`` and
    ``sep`` are those of `LMActionPrior`, whose prompt and action tokenisation the policy uses.
    """

    def __init__(self, lm: LM, actions: Sequence[str], window: int = 2, template: str = PRIOR_TEMPLATE,
                 chat: bool | None = None, sep: str = " "):
        super().__init__()
        self.model = lm.model
        self.tokenizer = lm.tokenizer
        self.window = window
        self.prior = LMActionPrior(lm, actions, template=template, chat=chat, sep=sep, cache_size=1)
        self.head = ValueHead(self.model.config.hidden_size).to(self.model.device)
        self.pad_id = self.tokenizer.pad_token_id or 0

    @property
    def actions(self) -> list[str]:
        return self.prior.actions

    def prompt_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of the prompt for each view (see :func:`render_history`)."""
        return [self.prior.prompt_ids(text) for text in texts]

    def forward(self, prompt_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, A) over the actions and values (B,), in one batched scoring pass."""
        scores, hidden = score_actions(self.model, prompt_ids, self.prior.action_ids, self.pad_id)
        return scores, self.head(hidden)

    @torch.no_grad()
    def act(self, prompt_ids: Sequence[Sequence[int]], generator: torch.Generator | None = None,
            greedy: bool = False) -> Decision:
        """Sample (or, ``greedy``, take the most likely) action in each of B states."""
        logits, values = self(prompt_ids)
        logp = logits.float().log_softmax(-1)
        if greedy:
            actions = logp.argmax(-1)
        else:
            actions = torch.multinomial(logp.exp().cpu(), 1, generator=generator).squeeze(-1).to(logp.device)
        return Decision(actions=actions, logprobs=logp.gather(-1, actions[:, None]).squeeze(-1),
                        values=values, logits=logits)

    def chooser(self, greedy: bool,
                generator: torch.Generator | None = None) -> Callable[[list[str]], list[int]]:
        """Views (B,) -> action indices (B,), for `langrl.rollout.episodes.run_episodes`."""
        return lambda views: self.act(self.prompt_ids(views), generator, greedy).actions.tolist()
