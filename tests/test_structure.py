"""The package reads top-down: its import graph, parsed from the source, has no cycle
and every import goes down the layers the package docstrings name.

Layers, bottom to top (a module may import its own layer and those below):

    foundation   the modules at the package root (facts, probing, ...) and its packages core/
                 (the model, its loading and activations) and runtime/ (threads, cache, ...)
    locate       workbench/locate/
    editing      workbench/editing/
    evaluation   workbench/evaluation/
    figures      workbench/figures/
    ui, cli      workbench/ui/, workbench/cli/ (neither imports the other)

Every import counts, also one inside a function: a lazy import may keep
``import workbench`` quick, but it must not hide a cycle or a call upwards. The
one exception is the root's lazy ``wb.Workbench``, which imports ``workbench.ui``
on first use so that ``import workbench`` never imports ipywidgets.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
LAYERS = ("foundation", "locate", "editing", "evaluation", "figures", "ui", "cli")
RANK = {"foundation": 0, "locate": 1, "editing": 2, "evaluation": 3, "figures": 4, "ui": 5, "cli": 5}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported workbench module, line, inside a function) for every import in a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from a import b` imports a.b when b is a module, else a.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            if target in known and target != name:
                found.append((target, node.lineno, id(node) in in_function))
    return found


def _graph() -> dict[str, list[tuple[str, int, bool]]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS and (PACKAGE / parts[1]).is_dir() else "foundation"


def test_the_parser_sees_real_imports():
    graph = _graph()
    assert ("workbench.locate.tracing", True) in {(t, True) for t, _, _ in graph["workbench.locate.aie"]}
    assert any(t == "workbench.ui" and lazy for t, _, lazy in graph["workbench"])
    assert len(graph) > 60


def test_import_graph_has_no_cycle():
    graph = {name: sorted({t for t, _, _ in edges}) for name, edges in _graph().items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def test_imports_go_down_the_layers():
    wrong = []
    for name, edges in _graph().items():
        if name == "workbench":
            # The public API re-exports every layer; only the lazy wb.Workbench reaches the UI.
            wrong += [f"workbench imports {t} at import time (line {line})"
                      for t, line, lazy in edges if _layer(t) in ("ui", "cli") and not lazy]
            continue
        here = _layer(name)
        for target, line, _ in edges:
            there = _layer(target)
            if RANK[there] > RANK[here] or (RANK[there] == RANK[here] and there != here):
                wrong.append(f"{name} ({here}) imports {target} ({there}), line {line}")
    assert not wrong, "\n".join(wrong)


def test_every_package_says_what_it_holds_and_may_import():
    for package in ("locate", "editing", "evaluation", "figures", "ui", "cli"):
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
        assert "may import" in doc, f"workbench/{package}/__init__.py does not say what it may import"


#: Functions allowed over :data:`MAX_FUNCTION_LINES`, each with its reason.
LONG_FUNCTIONS: dict[str, str] = {}
MAX_FUNCTION_LINES = 120


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                where = f"{path.relative_to(PACKAGE.parent)}:{node.name}"
                if lines > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS:
                    long.append(f"{where} is {lines} lines")
    assert not long, "\n".join(long)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_ui_cli_and_evaluation_never_name_a_method():
    """What a method is lives in its record (workbench.editing.registry.MethodSpec): the layers
    above the editors read the record, so a method added in one file is offered everywhere."""
    from workbench.editing import method_names

    names = set(method_names())
    found = []
    for package in ("ui", "cli", "evaluation"):
        for path in sorted((PACKAGE / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            docs = _docstring_nodes(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in names and id(node) not in docs:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} names {node.value!r}")
    assert not found, "\n".join(found)


def test_readme_is_short():
    """The README is a newcomer's page; results live in docs/results.md, timings in docs/performance.md."""
    lines = (PACKAGE.parent / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/ (at most 200)"
