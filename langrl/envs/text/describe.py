"""Words for what a BabyAI agent sees, as in GLAM (Carta et al. 2023, "Grounding Large Language Models
in Interactive Environments with Online Reinforcement Learning", ICML).

The input is minigrid's egocentric encoding of the agent's partial view: an array (V, V, 3) indexed
``[x, y]`` of (object type, colour, state), V = 7 by default, with the agent at ``(V // 2, V - 1)``
facing towards ``y = 0``. So a cell ``(x, y)`` lies ``V - 1 - y`` steps forward and ``x - V // 2``
steps to the right (negative: left). Minigrid puts the carried object in the agent's own cell.
"""

from __future__ import annotations

import numpy as np
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT, STATE_TO_IDX

IDX_TO_STATE = {v: k for k, v in STATE_TO_IDX.items()}
NOT_OBJECTS = {"unseen", "empty", "floor", "wall", "agent"}  # walls get their own three lines


def steps(n: int, direction: str) -> str:
    """``1 step left``, ``2 steps forward``."""
    return f"{n} step{'s' if n != 1 else ''} {direction}"


def relative_position(forward: int, right: int) -> str:
    """``2 steps forward and 1 step left``; either part is left out when it is zero."""
    parts = []
    if forward:
        parts.append(steps(forward, "forward"))
    if right:
        parts.append(steps(abs(right), "right" if right > 0 else "left"))
    return " and ".join(parts)


def with_article(words: str) -> str:
    """``a red ball``, ``an open door``."""
    return ("an " if words[0] in "aeiou" else "a ") + words


def object_name(obj: str, colour: str, state: str) -> str:
    """``red ball``, ``locked blue door``, ``goal``: colour for the coloured kinds, state for doors."""
    if obj == "door":
        return f"{state} {colour} door"
    if obj in ("key", "ball", "box"):
        return f"{colour} {obj}"
    return obj


def decode_cell(cell: np.ndarray) -> tuple[str, str, str]:
    """(type, colour, state) names of one encoded cell (3,)."""
    obj = IDX_TO_OBJECT[int(cell[0])]
    return obj, IDX_TO_COLOR.get(int(cell[1]), ""), IDX_TO_STATE.get(int(cell[2]), "")


def wall_distances(image: np.ndarray) -> dict[str, int]:
    """Distance to the nearest visible wall straight ahead, left and right of the agent.

    A scan stops at the first unseen cell: a wall behind an occluder is not in view.
    """
    size = image.shape[0]
    cx, cy = size // 2, size - 1
    rays = {
        "forward": [(cx, cy - d) for d in range(1, size)],
        "left": [(cx - d, cy) for d in range(1, cx + 1)],
        "right": [(cx + d, cy) for d in range(1, size - cx)],
    }
    found = {}
    for direction, cells in rays.items():
        for d, (x, y) in enumerate(cells, start=1):
            obj = IDX_TO_OBJECT[int(image[x, y, 0])]
            if obj == "unseen":
                break
            if obj == "wall":
                found[direction] = d
                break
    return found


def describe_view(image: np.ndarray, mission: str) -> str:
    """Text for one observation: the mission, the nearest walls, each visible object, what is carried.

    ``image`` is minigrid's (V, V, 3) encoding; objects are listed nearest first (Manhattan distance,
    ties broken by the text) so that the description of a state is deterministic.

    Example::

        Goal: go to the green ball.
        You see a wall 3 steps forward.
        You see a red ball 2 steps forward and 1 step left.
        You carry nothing.
    """
    size = image.shape[0]
    cx, cy = size // 2, size - 1
    lines = [f"Goal: {mission}."]
    for direction, d in wall_distances(image).items():
        lines.append(f"You see a wall {steps(d, direction)}.")
    seen = []
    for x in range(size):
        for y in range(size):
            if (x, y) == (cx, cy):
                continue
            obj, colour, state = decode_cell(image[x, y])
            if obj in NOT_OBJECTS:
                continue
            forward, right = cy - y, x - cx
            name = with_article(object_name(obj, colour, state))
            seen.append((forward + abs(right), f"You see {name} {relative_position(forward, right)}."))
    lines.extend(text for _, text in sorted(seen))
    obj, colour, state = decode_cell(image[cx, cy])
    carried = "nothing" if obj in NOT_OBJECTS else with_article(object_name(obj, colour, state))
    lines.append(f"You carry {carried}.")
    return "\n".join(lines)
