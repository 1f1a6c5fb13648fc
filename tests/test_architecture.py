"""The shape of the package (ARCHITECTURE.md): small modules, one direction of imports, no import
cycle, and nothing below the command line that prints or draws progress bars.

These read the source with ``ast``, so they see function-level (lazy) imports as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "evosgd"

#: which subpackages each layer may import (ARCHITECTURE.md: core <- landscapes <- gradient,
#: evolution <- scenario <- run <- analysis, report <- cli)
ALLOWED = {
    "core": set(),
    "landscapes": {"core"},
    "gradient": {"core", "landscapes"},
    "evolution": {"core", "landscapes", "gradient"},
    "scenario": {"core", "landscapes"},
    "run": {"core", "landscapes", "gradient", "evolution", "scenario"},
    "analysis": {"core", "landscapes", "gradient", "evolution", "scenario", "run"},
    "report": {"core", "analysis", "run", "scenario"},
}

#: process entry points that talk to their own terminal: torchrun's ``-m evosgd.run.ddp`` and the
#: helper process a data-parallel run spawns (its one line on stderr when rank 0 goes away)
ENTRY_POINTS = {"evosgd.run.ddp", "evosgd.gradient.ddp"}


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (f, ast.parse(f.read_text(encoding="utf-8")))
    return out


MODULES = _modules()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def _evosgd_imports(tree: ast.Module, top_level_only: bool = False) -> list[str]:
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evosgd"):
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("evosgd")]
    return found


def test_no_module_over_500_lines():
    long = {name: n for name, (f, _) in MODULES.items() if (n := len(f.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)))
def test_a_layer_imports_only_the_layers_below_it(module):
    own = _layer(module)
    bad = sorted({imp for imp in _evosgd_imports(MODULES[module][1])
                  if _layer(imp) not in (None, own) and _layer(imp) not in ALLOWED[own]})
    assert not bad, f"{module} ({own}) imports {bad}"


def test_no_import_cycle_at_module_level():
    graph = {m: {i for i in _evosgd_imports(t, top_level_only=True) if i in MODULES and i != m}
             for m, (_, t) in MODULES.items()}
    # a package's __init__ importing its own submodules is how it registers them, not a cycle
    graph = {m: {i for i in deps if not (i.startswith(m + ".") or m.startswith(i + ".") and
                                         MODULES[i][0].name == "__init__.py")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_nothing_below_the_command_line_prints_or_draws_progress_bars():
    offenders = []
    for name, (_, tree) in MODULES.items():
        if not _layer(name) or name in ENTRY_POINTS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{name}:{node.lineno} print")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                offenders += [f"{name}:{node.lineno} imports tqdm" for n in names if n.split(".")[0] == "tqdm"]
    assert not offenders, offenders


def test_the_layer_table_covers_every_subpackage():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(ALLOWED), subpackages ^ set(ALLOWED)
