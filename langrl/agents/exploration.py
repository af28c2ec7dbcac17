"""Exploration strategies for discrete actions, as pure functions over numpy arrays.

Shapes: ``values`` / ``logits`` are (B, A) (a batch of B states, A actions) or (A,); the result keeps the
leading shape. Randomness comes in as a ``numpy.random.Generator`` so that every function is
reproducible given its arguments. An LM prior enters as log-probabilities ``prior_logprobs`` of the same
shape (see `langrl.agents.prior`): it replaces the uniform draw of epsilon-greedy, or multiplies the
Boltzmann policy.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """``start + (end - start) * min(1, step / duration)``: a straight line, then flat at ``end``.

    The epsilon schedule of DQN (Mnih et al. 2015): 1.0 -> 0.1 over the first million frames.
    """
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, step / duration)


def exponential_schedule(step: int, start: float, end: float, decay: float) -> float:
    """``end + (start - end) * decay ** step``: geometric approach from ``start`` to ``end``."""
    return end + (start - end) * decay**step


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``exp(l / T) / sum exp(l / T)`` over the last axis, computed after subtracting the max (stable)."""
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature}; it must be > 0")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``l - logsumexp(l)`` over the last axis."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``probs`` (B, A) -> (B,) int64 (or (A,) -> scalar array), by inverse CDF."""
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((p.shape[0], 1)) * cdf[:, -1:]
    idx = np.minimum((cdf <= u).sum(axis=-1), p.shape[-1] - 1).astype(np.int64)
    return idx if np.ndim(probs) == 2 else idx[0]


def epsilon_greedy(values: np.ndarray, epsilon: float, rng: np.random.Generator,
                   prior_logprobs: np.ndarray | None = None) -> np.ndarray:
    """With probability ``epsilon`` (per row) an action drawn from the prior, else ``argmax values``.

    ``prior_logprobs`` None is the classic uniform draw (Sutton & Barto 2018, sec. 2.2); an LM prior
    makes the random branch try plausible actions first.
    """
    v = np.atleast_2d(values)
    greedy = v.argmax(axis=-1)
    # v.shape[0] is Any to numpy's stubs, which then pick random()'s scalar (size=None) overload
    explore = cast(np.ndarray, rng.random(v.shape[0])) < epsilon
    if explore.any():
        prior = np.full_like(v, 1.0 / v.shape[-1], dtype=np.float64) if prior_logprobs is None \
            else np.exp(np.atleast_2d(prior_logprobs))
        greedy = np.where(explore, sample_categorical(prior, rng), greedy)
    return greedy if np.ndim(values) == 2 else greedy[0]


def boltzmann_mix(logits: np.ndarray, prior_logprobs: np.ndarray | None = None, weight: float = 1.0,
                  temperature: float = 1.0) -> np.ndarray:
    """Logits of ``pi(a) ∝ exp((l_a + weight * log p_prior(a)) / T)``: the agent's Boltzmann policy times
    the prior raised to ``weight`` (a product of experts; ``weight = 0`` ignores the prior).

    Plain arithmetic, so it takes numpy arrays or torch tensors alike (the SB3 policy passes tensors).
    """
    mixed = logits if prior_logprobs is None else logits + weight * prior_logprobs
    return mixed / temperature


def boltzmann(values: np.ndarray, temperature: float, rng: np.random.Generator,
              prior_logprobs: np.ndarray | None = None, prior_weight: float = 1.0) -> np.ndarray:
    """Sample from ``softmax(boltzmann_mix(values, prior_logprobs, prior_weight, temperature))``."""
    return sample_categorical(softmax(boltzmann_mix(values, prior_logprobs, prior_weight, temperature)), rng)


def ucb_scores(means: np.ndarray, counts: np.ndarray, t: int, c: float = math.sqrt(2)) -> np.ndarray:
    """UCB1 (Auer et al. 2002): ``Q(a) + c * sqrt(ln t / N(a))``, +inf for untried actions (A,) -> (A,).

    ``t`` is the total number of pulls so far (the sum of ``counts``, or the step count).
    """
    means = np.asarray(means, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        bonus = c * np.sqrt(math.log(max(t, 1)) / counts)
    return np.where(counts > 0, means + bonus, np.inf)


def ucb_action(means: np.ndarray, counts: np.ndarray, t: int, c: float = math.sqrt(2)) -> int:
    """``argmax ucb_scores``; ties go to the lowest index, so untried actions are tried in order."""
    return int(np.argmax(ucb_scores(means, counts, t, c)))
