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


# Optional extras (pyproject.toml) and the export/bench-only libraries: a module may import these inside a function,
# and an internal module that pulls them in at its top may be imported inside a function too.
OPTIONAL = {"torch", "transformers", "optimum", "onnx", "onnxruntime.quantization", "tflite2onnx", "tflite", "skimage",
            "PIL", "yaml", "pyarrow", "paho", "cryptography", "aiortc", "aiohttp", "pyaudio", "tensorrt", "cuda",
            "pocketsphinx", "faster_whisper", "ctranslate2", "moonshine_voice", "selenium", "duckdb", "deltalake"}


def _imports(module: str) -> tuple[set[str], set[str], set[str]]:
    """(edgeomni modules imported at module level, ... imported inside functions, optional extras imported at module
    level); imports under `if TYPE_CHECKING:` are left out."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or (
                isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            nested.update(id(sub) for sub in ast.walk(node) if isinstance(sub, ast.Import | ast.ImportFrom))
    top: set[str] = set()
    inner: set[str] = set()
    extras: set[str] = set()
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
        if id(node) not in nested:
            extras.update(t for t in targets if t in OPTIONAL or t.split(".")[0] in OPTIONAL)
    return top - {module}, inner - {module}, extras


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
    edges = {module: {t for t in top if t not in _parents(module)} for module, (top, _, _) in GRAPH.items()}
    assert _cycles(edges) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_export_stage_and_the_benchmarks_do_not_import_each_other_and_share_data_sets_below_both() -> None:
    forbidden = {"edgeomni.export": ("edgeomni.bench",), "edgeomni.bench": ("edgeomni.export",),
                 "edgeomni.datasets": ("edgeomni.export", "edgeomni.bench")}
    crossings = []
    for module, (top, inner, _) in GRAPH.items():
        for prefix, others in forbidden.items():
            if module == prefix or module.startswith(prefix + "."):
                crossings += [f"{module} -> {t}" for t in top | inner if t.startswith(others)]
    assert crossings == []


def _pulls_in_an_extra(module: str) -> bool:
    """Whether importing `module` imports an optional extra (through its own or its imports' module-level imports)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        top, _, extras = GRAPH[current]
        if extras:
            return True
        todo.extend(top | _parents(current))
    return False


def test_internal_imports_sit_at_module_top() -> None:
    """Deferred imports hide the real graph; they are kept only where the import brings in an optional extra
    (torch, aiortc, paho, ...), so that a command that does not need it does not need it installed."""
    deferred = sorted(f"{module} -> {target}" for module, (_, inner, _) in GRAPH.items() for target in inner
                      if not _pulls_in_an_extra(target))
    assert deferred == []


ISSUE_REFERENCE = re.compile(r"\b(issue|issues) #?\d+\b", re.IGNORECASE)


def test_no_comment_or_docstring_points_at_an_issue_number() -> None:
    roots = [PACKAGE, ROOT / "tests", ROOT / "scripts", ROOT / "demos", ROOT / "runtimes", ROOT / "export",
             ROOT / "requirements"]
    files = [ROOT / "pyproject.toml", ROOT / "Makefile", *(path for root in roots for path in sorted(root.rglob("*")))]
    hits = []
    for path in files:
        text_file = path.suffix in (".py", ".sh", ".yaml", ".js", ".html", ".toml", ".service", ".txt", "")
        if not text_file or path == Path(__file__) or not path.is_file() or "data" in path.relative_to(ROOT).parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if ISSUE_REFERENCE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == []
