"""LMs given by name, loaded once per process and shared.

The LM encoder, the action prior and whatever unpickles them (a Stable-Baselines3 ``load``) take a model
by name, so that configurations (an RL Zoo YAML) and saved agents hold a name instead of the weights. Two
users of one name share one model: DQN's online and target encoders, or an encoder and a prior.
"""

from __future__ import annotations

from langrl.errors import ConfigError
from langrl.models.loading import LM, load_lm

LOADED: dict[str, LM] = {}  # name -> LM


def resolve_lm(lm: LM | str) -> LM:
    """An `LM` as given, or loaded on the CPU by name once per process (``tiny``, an embedded name, a folder,
    a hub id)."""
    if isinstance(lm, LM):
        return lm
    if not isinstance(lm, str):
        raise ConfigError(f"lm = {type(lm).__name__} object: give a model name ('smollm2-135m-instruct', 'tiny', "
                          f"a folder, a hub id) or an LM from langrl.models.load_lm")
    if lm not in LOADED:
        LOADED[lm] = load_lm(lm, device="cpu")
    return LOADED[lm]
