"""Planning with world models: an agent imagines ahead with a model of its environment and chooses actions
by search, or learns from imagined experience (model-based RL).

- `world_models`: the `PlanningModel` interface (``step(state, action) -> (next_state, reward, done)``),
  exact models (`MinigridModel` for BabyAI, `TableModel` for environments with a transition table), the
  learned `CountsModel`, the `CachedModel` cache and call counter, `TextWorldModel` for text models.
- `mcts`: `MCTS`, PUCT tree search with an action prior (`LMPrior` or uniform) and rollout values.
- `search`: `BeamSearch` and `BFS` with a depth limit and a budget.
- `dyna`: Dyna-Q (soft) on the toy token MDP toward pi* = pi0 exp(r / beta) / Z.
- `run`: the ``kind: plan`` run: planners evaluated on held-out seeds, Dyna trained through the harness.
"""

from langrl.planning.core import Budget, LMPrior, PlanDecision, RolloutValue, UniformPrior, ZeroValue
from langrl.planning.mcts import MCTS
from langrl.planning.search import BFS, BeamSearch
from langrl.planning.world_models import (
    CachedModel,
    CountsModel,
    MinigridModel,
    PlanningModel,
    TableModel,
    TextWorldModel,
    cached,
)

__all__ = ["BFS", "BeamSearch", "Budget", "CachedModel", "CountsModel", "LMPrior", "MCTS", "MinigridModel",
           "PlanDecision", "PlanningModel", "RolloutValue", "TableModel", "TextWorldModel", "UniformPrior",
           "ZeroValue", "cached"]
