"""Docs that run: every fenced code block of README.md and docs/*.md is executed (or validated), so an
example cannot break silently.

- ``python`` blocks of one file run in order as one script (later blocks use earlier names), in a fresh
  process, in a scratch folder that sees the repository's configs/, data/ and benchmarks/;
- ``bash`` blocks run with ``bash -e``; ``langrl train`` gets ``--smoke`` (the config's kind shrinks it
  to seconds), every other command runs as written;
- the embedded SmolLM2-135M is replaced by the tiny in-process model (``load_lm("tiny")``, ``--model
  tiny``, ``--set model=tiny`` for configs that name it): the same code on a smaller network;
- ``yaml`` blocks must parse; a block with ``kind:`` is validated as a config, and each ``reward:`` line as a
  reward spec;
- blocks without a language (output, diagrams) are not run; a block whose info string says ``norun`` is
  not run either, and must say why (e.g. ```` ```bash norun: a 20-minute benchmark ````).

:data:`SHORTER` lists every other change made before running (each one shortens a run; none changes
what the code does), so a reader can see exactly how the docs are exercised.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*(.*)$")
# (file name, text, replacement): shorter runs of the same code
SHORTER: list[tuple[str, str, str]] = [
    ("*", 'load_lm("smollm2-135m-instruct")', 'load_lm("tiny")'),
    ("*", "--model smollm2-135m-instruct", "--model tiny"),
    ("README.md", 'overrides=["steps=3"]', 'overrides=["steps=3", "model=tiny", "prompts.per_step=2", '
                                           '"sampling.group_size=2", "sampling.max_new_tokens=4"]'),
    ("README.md", 'overrides=["steps=20"]', 'overrides=["steps=4"]'),
    ("README.md", '"checkpoints/step-3")))', '"checkpoints/step-3"), overrides=["model=tiny"], num_prompts=2))'),
    ("README.md", "--model runs/tq-smoke --episodes 2", "--model runs/tq-smoke --episodes 1"),
    ("agents.md", "model.learn(1_000)", "model.learn(64)"),
    ("agents.md", "dqn.learn(200)", "dqn.learn(8)"),
    ("agents.md", "learning_starts=100", "learning_starts=4"),
    ("agents.md", "n_steps=128", "n_steps=8"),
    ("agents.md", "ppo.learn(128)", "ppo.learn(8)"),
    ("agents.md", "n_steps=256", "n_steps=32"),
    ("lm_agent.md", "--episodes 20", "--episodes 1 --set env.max_episode_steps=4"),
    ("lm_agent.md", "bench_babyai_lm_agent.py --quick", "bench_babyai_lm_agent.py --quick --skip-sb3 --set model=tiny"),
]


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    info: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        out.append(Block(path, i + 1, match.group(1), match.group(2), "\n".join(lines[i + 1:end])))
        i = end + 1
    return out


def runnable(block: Block) -> bool:
    if block.info.startswith("norun"):
        assert re.match(r"norun: \S", block.info), f"{block.where}: a norun block must say why (norun: reason)"
        return False
    return block.lang in ("python", "bash", "yaml")


def shorten(block: Block, text: str) -> str:
    for name, old, new in SHORTER:
        if name in ("*", block.path.name):
            text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    for name in ("configs", "benchmarks", "data", "langrl"):
        if (ROOT / name).exists():
            (folder / name).symlink_to(ROOT / name)
    return folder


def run(args: list[str], cwd: Path, where: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{where} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def with_smoke(script: str) -> str:
    """``langrl train CONFIG ...`` -> ``langrl train CONFIG --smoke [--set model=tiny] ...``."""
    def smoke(match: re.Match[str]) -> str:
        config = ROOT / match.group(2)
        data = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else {}
        tiny = " --set model=tiny" if str(data.get("model", "smollm2-135m-instruct")).startswith("smollm2") else ""
        return f"{match.group(1)} --smoke{tiny}"

    return re.sub(r"(\blangrl train (\S+))", smoke, script)


def check_yaml(block: Block) -> None:
    from langrl.config import load_any_config
    from langrl.rewards.config import parse_reward_spec

    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and "kind" in data:
        load_any_config(data)
        return
    for line in block.text.splitlines():
        item = yaml.safe_load(line.split("  #")[0]) if line.strip() else None
        if isinstance(item, dict) and "reward" in item:
            for spec in item["reward"] if isinstance(item["reward"], list) else [item["reward"]]:
                parse_reward_spec(spec)


DOC_IDS = [str(p.relative_to(ROOT)) for p in DOCS]


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_python_blocks_run(path: Path, scratch: Path):
    found = [b for b in blocks(path) if b.lang == "python" and runnable(b)]
    if not found:
        pytest.skip("no python blocks")
    script = "\n\n".join(f"# {b.where}\n{shorten(b, b.text)}" for b in found)
    run([sys.executable, "-c", script], scratch, f"python blocks of {path.name}")


# docs/lm_agent.md's commands train an agent and run a benchmark's plumbing: 2+ minutes, the slow tier
BASH_DOCS = [pytest.param(p, marks=pytest.mark.slow) if p.name == "lm_agent.md" else p for p in DOCS]


@pytest.mark.parametrize("path", BASH_DOCS, ids=DOC_IDS)
def test_bash_blocks_run(path: Path, scratch: Path):
    found = [b for b in blocks(path) if b.lang == "bash" and runnable(b)]
    if not found:
        pytest.skip("no bash blocks")
    for b in found:
        run(["bash", "-e", "-c", with_smoke(shorten(b, b.text))], scratch, b.where)


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_yaml_blocks_validate(path: Path):
    for b in blocks(path):
        if b.lang == "yaml" and runnable(b):
            check_yaml(b)


def test_every_block_says_what_it_is():
    """A fenced block is code (python, bash, yaml), output/diagram (no language) or norun with a reason."""
    for path in DOCS:
        for b in blocks(path):
            assert b.lang in ("", "python", "bash", "yaml", "json", "text"), f"{b.where}: language {b.lang!r}"
            runnable(b)
