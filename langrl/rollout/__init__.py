"""Rollouts: a policy snapshot acting in text environments, recording what learners need.

- `tokens`: a generative LM samples completions of prompts, G per prompt sharing the prompt's
  computation, with log-probs (and values) recorded on the way (one-step text episodes).
- `env_steps`: a choice policy acts in N vectorised text environments for n steps (training).
- `episodes`: whole episodes from given seeds (evaluation, demonstrations).
"""

from langrl.rollout.tokens import SamplingConfig, TokenRollout, filter_logits, sample

__all__ = ["SamplingConfig", "TokenRollout", "filter_logits", "sample"]
