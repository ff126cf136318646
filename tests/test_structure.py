"""Package structure rules (issue 17): modules stay short, and ``ssd_jax`` has no import cycles.

The import graph is read from the source with ``ast`` (every ``import`` statement, including ones
inside functions, since a function-level import is how a cycle hides), not by importing anything.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ssd_jax"
MAX_LINES = 400


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``module``)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """Edges module -> ssd_jax modules it imports. ``from pkg import name`` counts as importing
    ``pkg.name`` when that is a module, else ``pkg``."""
    graph = {}
    for name, path in modules.items():
        edges = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:  # `import ssd_jax.data.shapes` names the module itself
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None. Depth-first search with colours.

    A package's ``__init__`` importing its own submodules is not a cycle by itself; the submodule
    importing the package back (``from ssd_jax.data import x`` inside ``ssd_jax.data.y``) is, and
    is reported, since it only works while the package's import order happens to allow it."""
    colour = dict.fromkeys(graph, 0)
    stack = []

    def visit(node):
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == 1:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == 0 and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = 2
        return None

    for start in sorted(graph):
        if colour[start] == 0 and (found := visit(start)):
            return found
    return None


def test_find_cycle_on_hand_built_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is not a cycle


def test_import_graph_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "ssd_jax"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ssd_jax import top\n")
    (pkg / "top.py").write_text("from .sub import leaf\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = import_graph(_modules())
    assert graph["ssd_jax.sub.leaf"] == {"ssd_jax.top"}
    assert graph["ssd_jax.top"] == {"ssd_jax.sub.leaf"}
    assert find_cycle(graph) is not None


def test_ssd_jax_has_no_import_cycles():
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_is_short_or_says_why(name):
    path = _modules()[name]
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "over 400 lines" in doc, f"{path} has {lines} lines (> {MAX_LINES}) and its docstring does not say why"
