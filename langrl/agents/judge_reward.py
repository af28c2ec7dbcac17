"""A Gymnasium wrapper whose reward comes (in part) from an LM judge.

Per step, the judge reads one transition written with ``template`` (fields ``{question}``,
``{observation}``, ``{action}``, ``{next_observation}``, ``{reward}``); per episode, it reads the whole
episode once it ends (``{trajectory}``: one ``observation / action`` block per step) and the score is
paid on the last step. ``mode``:

- ``shaping``: ``r' = r + coef * judge`` (the environment's reward stays the objective's anchor);
- ``replace``: ``r' = coef * judge`` (the judge is the only signal; zero on other steps per episode).

Observations are read as text: the observation itself when it is a string, else ``info["text"]`` (so the
wrapper can sit outside `TokenizeObservation`). Actions are named by the previous ``info["actions"]``
when the environment lists them. ``info`` gets ``env_reward`` and ``judge_reward``.
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym

from langrl.agents.judge import LMJudge

STEP_TEMPLATE = (
    "An agent acts in a text game.\nObservation: {observation}\nAction: {action}\n"
    "Next observation: {next_observation}\n\n{question} Answer yes or no."
)
EPISODE_TEMPLATE = "An agent played one episode of a text game.\n{trajectory}\n\n{question} Answer yes or no."
Mode = Literal["shaping", "replace"]
Per = Literal["step", "episode"]


class LMJudgeReward(gym.Wrapper):
    """Adds (``shaping``) or substitutes (``replace``) ``coef`` times the judge's score for the reward."""

    def __init__(self, env: gym.Env, judge: LMJudge, question: str, template: str | None = None,
                 mode: Mode = "shaping", coef: float = 1.0, per: Per = "step"):
        super().__init__(env)
        if mode not in ("shaping", "replace"):
            raise ValueError(f"mode = {mode!r}; use 'shaping' or 'replace'")
        if per not in ("step", "episode"):
            raise ValueError(f"per = {per!r}; use 'step' or 'episode'")
        self.judge = judge
        self.question = question
        self.template = template or (STEP_TEMPLATE if per == "step" else EPISODE_TEMPLATE)
        self.mode: Mode = mode
        self.coef = coef
        self.per: Per = per
        self.last_text = ""
        self.action_names: list[str] | None = None
        self.trajectory: list[str] = []

    @staticmethod
    def text_of(obs: Any, info: dict[str, Any]) -> str:
        return obs if isinstance(obs, str) else str(info.get("text", obs))

    def action_name(self, action: Any) -> str:
        if self.action_names is not None:
            return self.action_names[int(action)]
        return str(action)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.last_text = self.text_of(obs, info)
        self.action_names = info.get("actions")
        self.trajectory = []
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        text, name = self.text_of(obs, info), self.action_name(action)
        if self.per == "step":
            question = self.template.format(question=self.question, observation=self.last_text, action=name,
                                            next_observation=text, reward=reward)
            judged = float(self.judge.score([question])[0])
        else:
            self.trajectory.append(f"Observation: {self.last_text}\nAction: {name}")
            judged = 0.0
            if terminated or truncated:
                steps = "\n".join(self.trajectory) + f"\nFinal observation: {text}"
                judged = float(self.judge.score([self.template.format(question=self.question,
                                                                       trajectory=steps)])[0])
        self.last_text = text
        self.action_names = info.get("actions", self.action_names)
        shaped = float(reward) + self.coef * judged if self.mode == "shaping" else self.coef * judged
        return obs, shaped, terminated, truncated, {**info, "env_reward": reward, "judge_reward": judged}
