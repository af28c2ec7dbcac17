"""What a policy sees of a multi-step text environment: a window of earlier (observation, action) pairs
followed by the current observation."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


def render_history(past: Sequence[tuple[str, str]], current: str) -> str:
    """The policy's view: earlier (observation, action) pairs, oldest first, then the current observation.

    With no past this is ``current`` itself (what the prior scores). A first line shared by every
    observation (BabyAI's ``Goal: ...``) is written once, at the top::

        Goal: go to the red ball.
        Observation: You see a wall 2 steps left. ...
        Action: turn left
        Observation: ...
    """
    if not past:
        return current
    head = current.partition("\n")[0]
    shared = all(obs.partition("\n")[0] == head for obs, _ in past)

    def body(obs: str) -> str:
        return obs.partition("\n")[2] if shared else obs

    lines = [head] if shared else []
    for obs, action in past:
        lines += [f"Observation: {body(obs)}", f"Action: {action}"]
    lines.append(f"Observation: {body(current)}")
    return "\n".join(lines)


class EpisodeWindow:
    """The last ``size`` (observation, action) pairs of each of N environments' current episodes."""

    def __init__(self, n_envs: int, size: int):
        self.past: list[deque[tuple[str, str]]] = [deque(maxlen=size) for _ in range(n_envs)]

    def texts(self, observations: Sequence[str]) -> list[str]:
        """The policy's view of each environment (N,): its window followed by its current observation."""
        return [render_history(list(p), o) for p, o in zip(self.past, observations, strict=True)]

    def push(self, observations: Sequence[str], actions: Sequence[str], done: Sequence[bool]) -> None:
        """Record that ``actions`` were taken in ``observations``; an environment whose episode ended
        (``done``) starts over with an empty window."""
        for past, obs, action, end in zip(self.past, observations, actions, done, strict=True):
            if end:
                past.clear()
            elif past.maxlen:
                past.append((obs, action))
