"""The shape of the package, checked from its source: the import graph has no cycles, the export stage and the
benchmarks stay apart, internal imports sit at module top, and code comments need no issue tracker to read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgeomni"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(edgeomni modules imported at module level, ... imported inside functions); TYPE_CHECKING blocks left out."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            nested.update(id(sub) for sub in ast.walk(node) if isinstance(sub, ast.Import | ast.ImportFrom))
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            nested.update(id(sub) for sub in ast.walk(node) if isinstance(sub, ast.Import | ast.ImportFrom))
    top: set[str] = set()
    inner: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
        internal = {t for t in targets if t in MODULES}
        (inner if id(node) in nested else top).update(internal)
    return top - {module}, inner - {module}


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _parents(module: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first: those edges are part of the real graph."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & set(MODULES)


def test_the_module_level_import_graph_has_no_cycles() -> None:
    edges = {module: {t for t in top if t not in _parents(module)} for module, (top, _) in GRAPH.items()}
    assert _cycles(edges) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_export_stage_and_the_benchmarks_do_not_import_each_other() -> None:
    crossings = []
    for module, (top, inner) in GRAPH.items():
        for target in top | inner:
            if (module.startswith("edgeomni.export") and target.startswith("edgeomni.bench")) or (
                    module.startswith("edgeomni.bench") and target.startswith("edgeomni.export")):
                crossings.append(f"{module} -> {target}")
    assert crossings == []


def test_internal_imports_sit_at_module_top() -> None:
    """Deferred imports hide the real graph; they are kept only for optional extras (torch, aiortc, ...), which are
    not edgeomni modules. An edgeomni module imported inside a function is listed here."""
    deferred = sorted(f"{module} -> {target}" for module, (_, inner) in GRAPH.items() for target in inner)
    assert deferred == []


ISSUE_REFERENCE = re.compile(r"\b(issue|issues) #?\d+\b", re.IGNORECASE)


def test_no_comment_or_docstring_points_at_an_issue_number() -> None:
    roots = [PACKAGE, ROOT / "tests", ROOT / "scripts", ROOT / "demos", ROOT / "runtimes", ROOT / "export"]
    hits = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix not in (".py", ".sh", ".yaml", ".js", ".html", ".toml", ".service") or path == Path(
                    __file__):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if ISSUE_REFERENCE.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == []
