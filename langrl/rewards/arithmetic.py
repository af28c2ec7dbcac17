"""The arithmetic questions bundled with langrl (``arithmetic.jsonl``, ``arithmetic_test.jsonl``): a small
task with a verifiable reward (`langrl.rewards.answers.exact_answer`).

The files are generated, not written by hand: ``python -m langrl.rewards.arithmetic`` rewrites them, and a
test checks that the shipped files equal what `arithmetic_rows` makes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

TRAIN_ROWS = 400
TEST_ROWS = 100
SEED = 17


def question(rng: random.Random) -> tuple[str, int]:
    """One question and its answer: a sum or difference of two numbers below 100, or a product of two
    numbers from 2 to 12 (what a 135M model can learn to get right)."""
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return f"What is {a} * {b}?", a * b
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    return (f"What is {a} + {b}?", a + b) if op == "+" else (f"What is {a} - {b}?", a - b)


def arithmetic_rows(count: int = TRAIN_ROWS + TEST_ROWS, seed: int = SEED) -> list[dict[str, Any]]:
    """``count`` distinct questions ``{"prompt": ..., "answer": ...}`` drawn with ``seed``."""
    rng = random.Random(seed)
    rows: dict[str, int] = {}
    while len(rows) < count:
        text, answer = question(rng)
        rows.setdefault(text, answer)
    return [{"prompt": text, "answer": answer} for text, answer in rows.items()]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write_arithmetic_data(folder: Path) -> tuple[Path, Path]:
    """Write the training questions (the first `TRAIN_ROWS`) and the held-out ones (the rest)."""
    rows = arithmetic_rows()
    train, test = folder / "arithmetic.jsonl", folder / "arithmetic_test.jsonl"
    train.write_text(jsonl(rows[:TRAIN_ROWS]), encoding="utf-8")
    test.write_text(jsonl(rows[TRAIN_ROWS:]), encoding="utf-8")
    return train, test


if __name__ == "__main__":
    written = write_arithmetic_data(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "data")
    print("wrote", *written)
