"""The import rules of the design guide, checked on the source: no cycles between langrl's modules
(counting imports inside functions, which is how cycles hide); the pure maths (`rl/`, `bayes/`) import
only torch, numpy and the standard library; models import neither rollouts nor training loops; nothing
imports the command line."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "langrl"
PURE_ALLOWED = {"torch", "numpy", "__future__"} | set(sys.stdlib_module_names)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports at run time (top level or inside functions; not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for block in ast.walk(tree) if type_checking_block(block) for n in ast.walk(block)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from langrl.run import seeds` imports the module langrl.run.seeds
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


GRAPH = {name: {m for m in imports(path) if m in MODULES} for name, path in MODULES.items()}


def test_there_are_modules_to_check():
    assert {"langrl.rl.returns", "langrl.run.harness", "langrl.agents.lm_agent", "langrl.lm.trainer"} <= set(GRAPH)


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("package", ["langrl.rl", "langrl.bayes"])
def test_pure_maths_import_only_torch_numpy_and_the_standard_library(package):
    bad = {}
    for name, path in MODULES.items():
        if name == package or name.startswith(package + "."):
            outside = {m for m in imports(path) if m.split(".")[0] not in PURE_ALLOWED
                       and not (m == package or m.startswith(package + "."))}
            if outside:
                bad[name] = sorted(outside)
    assert not bad


def test_models_import_neither_rollouts_nor_loops():
    forbidden = ("langrl.rollout", "langrl.lm", "langrl.agents", "langrl.report", "langrl.eval", "langrl.api",
                 "langrl.run.harness", "langrl.run.logger", "langrl.run.optim")
    bad = {name: sorted(m for m in deps if m.startswith(forbidden))
           for name, deps in GRAPH.items() if name.startswith("langrl.models")}
    assert not {k: v for k, v in bad.items() if v}


def test_rollouts_know_nothing_of_learners():
    bad = {name: sorted(m for m in deps if m.startswith(("langrl.lm", "langrl.agents", "langrl.run.harness")))
           for name, deps in GRAPH.items() if name.startswith("langrl.rollout")}
    assert not {k: v for k, v in bad.items() if v}


def test_nothing_imports_the_command_line():
    assert not [name for name, deps in GRAPH.items() if "langrl.cli" in deps]
