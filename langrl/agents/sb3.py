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
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import ActorCriticPolicy

from langrl.agents.exploration import boltzmann, boltzmann_mix, sample_categorical
from langrl.protocols import ActionPrior, ObservationDecoder


class PriorDQN(DQN):
    """``DQN(policy, env, prior=..., decode=..., **dqn_kwargs)``; without a prior (and without
    ``boltzmann_temperature``) it is plain DQN.

    ``prior`` and ``decode`` are not saved with the model; pass them again to ``PriorDQN.load(path,
    prior=..., decode=...)``.
    """

    def __init__(self, *args: Any, prior: ActionPrior | None = None, decode: ObservationDecoder | None = None,
                 boltzmann_temperature: float | None = None, prior_weight: float = 1.0, **kwargs: Any):
        self.prior = prior
        self.decode = decode
        self.boltzmann_temperature = boltzmann_temperature
        self.prior_weight = prior_weight
        self.prior_rng = np.random.default_rng(kwargs.get("seed"))
        super().__init__(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "prior", "decode", "prior_rng"]  # the LM stays out

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


class PriorActorCriticPolicy(ActorCriticPolicy):
    """ActorCriticPolicy with ``logits = action_net(latent) + prior_weight * log p_prior(a | s)``.

    Pass as ``PPO(PriorActorCriticPolicy, env, policy_kwargs={"prior": ..., "decode": ...,
    "prior_weight": 1.0, ...})``. Discrete action spaces only.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, *args: Any,
                 prior: ActionPrior, decode: ObservationDecoder, prior_weight: float = 1.0, **kwargs: Any):
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"PriorActorCriticPolicy needs a Discrete action space, got {action_space}")
        if len(prior.actions) != action_space.n:
            raise ValueError(f"the prior has {len(prior.actions)} actions, the environment {action_space.n}")
        super().__init__(observation_space, action_space, *args, **kwargs)
        self.prior = prior
        self.decode = decode
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
