"""Tier 4 (slow): DQN with the RL Zoo's settings (configs/dqn_cartpole.yaml) solves CartPole-v1: its best
network reaches a mean return >= 475 over 20 greedy episodes from test seeds that took no part in choosing it.

Training stops once an evaluation (10 episodes, every 5,000 steps) reaches 475, as SB3's
StopTrainingOnRewardThreshold does, so the test takes a few minutes of one core rather than the whole 50k
steps; the 20-episode test is separate. One seed: across seeds the figures are in benchmarks/RESULTS_value.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import langrl
from langrl.run.callbacks import StopAtThreshold

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "dqn_cartpole.yaml"


def test_dqn_best_network_solves_cartpole(tmp_path):
    result = langrl.train(str(CONFIG), output=tmp_path / "run", overrides=["seed=0", "log.progress=false"],
                          callbacks=[StopAtThreshold("eval/mean_return", 475.0)])
    m = result.metrics
    assert m["best/episodes"] == 20 and m["best/eval_mean_return"] >= 475.0
    assert m["best/mean_return"] >= 475.0, f"best network: {m['best/mean_return']} over 20 test episodes"
    assert m["env/steps"] <= 50_000
