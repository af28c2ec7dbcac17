"""Planning with world models: an agent imagines ahead with a model of its environment and chooses actions
by search, or learns from imagined experience (model-based RL).

- `world_models`: the `PlanningModel` interface (``step(state, action) -> (next_state, reward, done)``),
  exact models (`MinigridModel` for BabyAI, `TableModel` for environments with a transition table), the
  learned `CountsModel`, the `CachedModel` cache and call counter, `TextWorldModel` for text models.
- `mcts`: `MCTS`, PUCT tree search with an action prior (`LMPrior` or uniform) and rollout values.
- `search`: `BeamSearch` and `BFS` with a depth limit and a budget.
- `dyna`: Dyna-Q (soft) on the toy token MDP toward pi* = pi0 exp(r / beta) / Z.
- `run`: the ``kind: plan`` run: planners evaluated on held-out seeds, Dyna trained through the harness.
- `transitions`, `lm_world_model`: an LM as the world model of a text environment (`LMWorldModel`), its
  data and text format, its SFT loss and one-step accuracy; `world_model_run`: the ``kind: world_model`` run.
- `story`: writing a story as planning: an LM proposes next sentences (`SentenceProposer`), a reward model
  scores partial stories (`StoryModel`), a planner chooses (`plan_story`); `best_of_n` is the peer.
"""

from langrl.planning.core import Budget, LMPrior, PlanDecision, RolloutValue, UniformPrior, ZeroValue
from langrl.planning.lm_world_model import LMWorldModel, one_step_accuracy, sft_loss
from langrl.planning.mcts import MCTS
from langrl.planning.search import BFS, BeamSearch
from langrl.planning.story import SentenceProposer, StoryModel, best_of_n, plan_story
from langrl.planning.transitions import Transition, collect_transitions
from langrl.planning.world_models import (
    CachedModel,
    CountsModel,
    MinigridModel,
    PlanningModel,
    TableModel,
    TextWorldModel,
    cached,
)

__all__ = ["BFS", "BeamSearch", "Budget", "CachedModel", "CountsModel", "LMPrior", "LMWorldModel", "MCTS",
           "MinigridModel", "PlanDecision", "PlanningModel", "RolloutValue", "SentenceProposer", "StoryModel",
           "TableModel", "TextWorldModel", "Transition", "UniformPrior", "ZeroValue", "best_of_n", "cached",
           "collect_transitions", "one_step_accuracy", "plan_story", "sft_loss"]
