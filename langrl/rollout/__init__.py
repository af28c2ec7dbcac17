"""Rollout: batched sampling from a policy snapshot."""

from langrl.rollout.sampling import Rollout, SamplingConfig, filter_logits, sample

__all__ = ["Rollout", "SamplingConfig", "filter_logits", "sample"]
