"""RL for LMs on prompts: the trainer (`trainer`), the algorithms (REINFORCE, RLOO, GRPO in
`policy_gradient`; A2C and PPO in `actor_critic`; DPG in `dpg`), evaluation and the exact Bayesian monitor.

Nothing is imported here, so that importing one learner does not import the others."""
