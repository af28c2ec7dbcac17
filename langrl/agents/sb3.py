"""The LM exploration prior inside Stable-Baselines3 agents (discrete actions).

- :class:`PriorDQN`: DQN whose epsilon branch (and warm-up) draws actions from the prior instead of
  uniformly. The coin is tossed per environment (SB3's DQN tosses one coin for the whole batch).
  With ``boltzmann_temperature`` it explores by Boltzmann sampling of the Q-values mixed with the prior
  instead, ``a ~ softmax((Q(s, .) + w * log p_LM(.|s)) / T)``.
- :class:`PriorActorCriticPolicy`: a policy for PPO / A2C whose action distribution is the agent's
  Boltzmann policy times the prior, ``pi(a|s) ∝ exp(l_a(s) + w * log p_LM(a|s))``. The prior enters the
  rollout and the loss identically, so PPO's importance ratios stay exact; the agent's logits learn a
  correction to the LM's preference rather than a policy from scratch.

Both take an `ActionPrior` and an `ObservationDecoder` that turns observations back into text, e.g.
``partial(decode_ids, tokenizer)`` for `TokenizeObservation` ids.

Everything can also be given by name, as an RL Zoo YAML must (``policy: langrl.agents.sb3.<class>`` and
``policy_kwargs`` of names and numbers): the prior as a spec, ``dict(lm="tiny", actions=[...])`` (see
`LMActionPrior.from_spec`), and ``decode`` as the name of the model whose tokenizer made the ids.
:class:`LMActorCriticPolicy` (PPO, A2C), :class:`LMDQNPolicy` (DQN) and :class:`PriorActorCriticPolicy`
use `LMEncoder` as their features extractor unless told otherwise, so ``features_extractor_kwargs`` (e.g.
``dict(lm="tiny")``) is all a YAML gives. A saved agent then holds names, never an LM: SB3 pickles
``policy_kwargs`` (and `PriorDQN` its ``prior`` and ``decode``), an `LMActionPrior` pickles as its spec
however it was built, and `DecodeIds` as its tokenizer's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.dqn.policies import DQNPolicy

from langrl.agents.encoder import LMEncoder
from langrl.agents.exploration import boltzmann, boltzmann_mix, sample_categorical
from langrl.agents.prior import LMActionPrior
from langrl.envs.text.tokenize import DecodeIds
from langrl.errors import ConfigError
from langrl.protocols import ActionPrior, ObservationDecoder


def with_lm_encoder(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Policy keyword arguments with `LMEncoder` as the features extractor unless they name one."""
    return {"features_extractor_class": LMEncoder, **kwargs}


def as_prior(prior: ActionPrior | Mapping[str, Any]) -> ActionPrior:
    """An `ActionPrior` as given, or the `LMActionPrior` of a spec (``dict(lm=..., actions=[...])``)."""
    if isinstance(prior, Mapping):
        # its actions are a list, a Sequence; mypy wants the protocol's mutable attribute's exact type
        return cast(ActionPrior, LMActionPrior.from_spec(prior))
    if not isinstance(prior, ActionPrior):
        raise ConfigError(f"prior = {type(prior).__name__} object: give an ActionPrior (actions and logprobs) or "
                          f"a spec such as dict(lm='smollm2-135m-instruct', actions=['push left', 'push right'])")
    return prior


def as_decoder(decode: ObservationDecoder | str) -> ObservationDecoder:
    """A decoder as given, or `DecodeIds` of the model named ``decode``."""
    if isinstance(decode, str):
        return DecodeIds(decode)
    if not callable(decode):
        raise ConfigError(f"decode = {decode!r}: give the name of the model whose tokenizer made the ids "
                          f"(e.g. 'smollm2-135m-instruct') or a function from observations to texts")
    return decode


def prior_and_decoder(prior: ActionPrior | Mapping[str, Any] | None, decode: ObservationDecoder | str | None,
                      ) -> tuple[ActionPrior | None, ObservationDecoder | None]:
    """`as_prior` and `as_decoder` of each one given."""
    return (None if prior is None else as_prior(prior)), (None if decode is None else as_decoder(decode))


class PriorDQN(DQN):
    """``DQN(policy, env, prior=..., decode=..., **dqn_kwargs)``; without a prior (and without
    ``boltzmann_temperature``) it is plain DQN. ``prior`` may be a spec and ``decode`` a model name (see
    the module docstring); use :class:`LMDQNPolicy` for the LM encoder.

    ``prior`` and ``decode`` are saved with the model (an `LMActionPrior` as its spec, no weights), so
    ``PriorDQN.load(path)`` restores them; ``PriorDQN.load(path, prior=..., decode=...)`` replaces them.
    """

    def __init__(self, *args: Any, prior: ActionPrior | Mapping[str, Any] | None = None,
                 decode: ObservationDecoder | str | None = None, boltzmann_temperature: float | None = None,
                 prior_weight: float = 1.0, **kwargs: Any):
        self.prior, self.decode = prior_and_decoder(prior, decode)
        self.boltzmann_temperature = boltzmann_temperature
        self.prior_weight = prior_weight
        self.prior_rng = np.random.default_rng(kwargs.get("seed"))
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        # load() sets the saved prior and decode, then any given to it (specs and names too), then calls this
        self.prior, self.decode = prior_and_decoder(self.prior, self.decode)
        super()._setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "prior_rng"]

    def sample_prior(self, observations: np.ndarray) -> np.ndarray:
        """One action per observation (B, ...) -> (B,), drawn from the prior."""
        assert self.prior is not None and self.decode is not None
        return sample_categorical(np.exp(self.prior.logprobs(self.decode(observations))), self.prior_rng)

    def predict(self, observation: Any, state: tuple[np.ndarray, ...] | None = None,
                episode_start: np.ndarray | None = None, deterministic: bool = False,
                ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Greedy, except with probability ``exploration_rate`` per environment: a prior sample.
        With ``boltzmann_temperature``: a sample of the Boltzmann policy over Q-values and prior."""
        if deterministic or isinstance(observation, dict):
            return super().predict(observation, state, episode_start, deterministic)
        if self.boltzmann_temperature is not None:
            return self.boltzmann_predict(observation), state
        if self.prior is None:
            return super().predict(observation, state, episode_start, deterministic)
        action, state = self.policy.predict(observation, state, episode_start, deterministic=True)
        vectorized = self.policy.is_vectorized_observation(observation)
        obs = np.asarray(observation) if vectorized else np.asarray(observation)[None]
        actions = np.atleast_1d(action).copy()
        explore = self.prior_rng.random(len(actions)) < self.exploration_rate
        if explore.any():
            actions[explore] = self.sample_prior(obs[explore])
        return (actions if vectorized else actions[0]), state

    def boltzmann_predict(self, observation: np.ndarray) -> np.ndarray:
        """``a ~ softmax((Q + w * log prior) / T)`` per environment (no prior: plain Boltzmann on Q)."""
        assert self.boltzmann_temperature is not None
        obs_tensor, vectorized = self.policy.obs_to_tensor(observation)
        with torch.no_grad():
            q_values = self.q_net(obs_tensor).cpu().numpy()  # (B, A)
        prior = None
        if self.prior is not None and self.decode is not None:
            obs = np.asarray(observation) if vectorized else np.asarray(observation)[None]
            prior = self.prior.logprobs(self.decode(obs))
        actions = boltzmann(q_values, self.boltzmann_temperature, self.prior_rng, prior, self.prior_weight)
        return actions if vectorized else actions[0]

    def _sample_action(self, learning_starts: int, action_noise: ActionNoise | None = None,
                       n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Warm-up actions come from the prior too (SB3 draws them uniformly)."""
        if self.prior is not None and self.num_timesteps < learning_starts:
            assert self._last_obs is not None and not isinstance(self._last_obs, dict)
            action = self.sample_prior(self._last_obs)
            return action, action
        return super()._sample_action(learning_starts, action_noise, n_envs)


class LMActorCriticPolicy(ActorCriticPolicy):
    """SB3's ActorCriticPolicy (PPO, A2C) with `LMEncoder` as its default features extractor: an RL Zoo
    YAML names it (``policy: langrl.agents.sb3.LMActorCriticPolicy``) and gives the encoder's arguments in
    ``features_extractor_kwargs`` (``dict(lm="smollm2-135m-instruct")``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **with_lm_encoder(kwargs))


class LMDQNPolicy(DQNPolicy):
    """SB3's DQNPolicy (DQN, `PriorDQN`) with `LMEncoder` as its default features extractor (see
    :class:`LMActorCriticPolicy`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **with_lm_encoder(kwargs))


class PriorActorCriticPolicy(ActorCriticPolicy):
    """ActorCriticPolicy with ``logits = action_net(latent) + prior_weight * log p_prior(a | s)``.

    Pass as ``PPO(PriorActorCriticPolicy, env, policy_kwargs={"prior": ..., "decode": ...,
    "prior_weight": 1.0, ...})``; ``prior`` may be a spec and ``decode`` a model name (see the module
    docstring). The features extractor is `LMEncoder` unless ``features_extractor_class`` says otherwise.
    Discrete action spaces only.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, *args: Any,
                 prior: ActionPrior | Mapping[str, Any], decode: ObservationDecoder | str, prior_weight: float = 1.0,
                 **kwargs: Any):
        if not isinstance(action_space, spaces.Discrete):
            raise ConfigError(f"action space = {action_space}: PriorActorCriticPolicy needs a Discrete one; "
                              f"use an environment with a finite set of actions")
        prior = as_prior(prior)
        if len(prior.actions) != action_space.n:
            raise ConfigError(f"prior actions = {list(prior.actions)!r}: {len(prior.actions)} strings for an "
                              f"environment with {action_space.n} actions; give one string per action, in order")
        super().__init__(observation_space, action_space, *args, **with_lm_encoder(kwargs))
        self.prior = prior
        self.decode = as_decoder(decode)
        self.prior_weight = prior_weight

    def prior_logprobs(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, A) prior log-probabilities for a batch of observations, on the policy's device."""
        texts = self.decode(obs.detach().cpu().numpy())
        return torch.as_tensor(self.prior.logprobs(texts), dtype=torch.float32, device=obs.device)

    def distribution(self, latent_pi: torch.Tensor, obs: torch.Tensor) -> Distribution:
        # boltzmann_mix is annotated for numpy but is plain arithmetic: tensors work as well
        logits = boltzmann_mix(self.action_net(latent_pi), self.prior_logprobs(obs),  # type: ignore[arg-type]
                               self.prior_weight)
        return self.action_dist.proba_distribution(action_logits=logits)

    def latents(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extract_features(obs)
        if self.share_features_extractor:
            return self.mlp_extractor(features)
        pi_features, vf_features = features
        return self.mlp_extractor.forward_actor(pi_features), self.mlp_extractor.forward_critic(vf_features)

    def forward(self, obs: torch.Tensor, deterministic: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent_pi, latent_vf = self.latents(obs)
        distribution = self.distribution(latent_pi, obs)
        actions = distribution.get_actions(deterministic=deterministic)
        shape = cast(tuple[int, ...], self.action_space.shape)  # Discrete: (), never None
        return actions.reshape((-1, *shape)), self.value_net(latent_vf), \
            distribution.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor,  # type: ignore[override]  # no dict obs
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        latent_pi, latent_vf = self.latents(obs)
        distribution = self.distribution(latent_pi, obs)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: torch.Tensor) -> Distribution:  # type: ignore[override]  # no dict observations
        features = super(ActorCriticPolicy, self).extract_features(obs, self.pi_features_extractor)
        return self.distribution(self.mlp_extractor.forward_actor(features), obs)
