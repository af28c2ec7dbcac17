"""Environments: the toy token MDP whose KL-regularised optimum is computed exactly."""

from langrl.envs.toy import TOY_LETTERS, letter_reward, toy_lm, toy_tokenizer

__all__ = ["TOY_LETTERS", "letter_reward", "toy_lm", "toy_tokenizer"]
