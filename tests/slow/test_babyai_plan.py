"""Tier 4 (slow): MCTS with the exact world model on BabyAI GoToLocal, through `langrl eval` of
configs/babyai_plan.yaml, on a few held-out seeds (100 seeds: benchmarks/RESULTS_planning.md)."""

import pytest

import langrl

pytestmark = pytest.mark.slow


def test_mcts_with_the_exact_model_solves_goto_local():
    result = langrl.evaluate("configs/babyai_plan.yaml", "uniform", episodes=10)
    assert result["episodes"] == 10 and result["success_rate"] >= 0.9, result
    assert result["calls_per_decision"] > 100 and result["seconds_per_decision"] > 0


def test_the_embedded_lm_can_be_the_prior():
    result = langrl.evaluate("configs/babyai_plan.yaml", "smollm2-135m-instruct", episodes=1,
                             overrides=["planner.simulations=20", "env.max_episode_steps=3"])
    assert result["decisions"] == 3 or result["success_rate"] == 1.0
    assert result["prior_calls_per_decision"] >= 1
