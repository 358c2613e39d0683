"""The package's import graph, read from the source: no module imports itself back, however far round.

Every import counts, a function's own included (it runs on the first call, and hides a cycle rather than removing
it); only those under ``if TYPE_CHECKING:`` do not, since they never run.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "netloop"

# What the options may import of netloop: checking a value is pure, and must not pull in sockets, TLS or loops.
OPTIONS_MAY_IMPORT = {"netloop._errors", "netloop._handler", "netloop._networks"}


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its ``__init__``)."""
    names: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``node`` that can run: anywhere but the body of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            for rest in child.orelse:
                yield from _runtime_imports_of(rest)
            continue
        yield from _runtime_imports_of(child)


def _runtime_imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _runtime_imports(node)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports when it runs."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from package import module`` imports the module; ``from module import name`` the module alone.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            # ``import netloop.a.b`` runs netloop.a.b: the longest prefix that is one of the package's modules.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the list of its modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


def test_the_graph_reader_sees_function_local_imports_and_skips_type_checking_ones() -> None:
    graph = import_graph()
    assert "netloop._engine" in graph["netloop"]
    # A cycle through a function-local import is found; one through ``if TYPE_CHECKING:`` is not there.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import netloop._conn
def f():
    import netloop._tls
"""
    tree = ast.parse(source)
    names = [node.module if isinstance(node, ast.ImportFrom) else node.names[0].name for node in _runtime_imports(tree)]
    assert names == ["typing", "netloop._tls"]


def test_no_module_of_netloop_imports_itself_back() -> None:
    graph = import_graph()
    cycles = []
    while (cycle := find_cycle(graph)) is not None:
        cycles.append(" -> ".join(cycle))
        graph[cycle[-2]].discard(cycle[-1])  # break it there, to report the next one too
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_options_import_no_io_module() -> None:
    ours = {name for name in import_graph()["netloop._options"] if name.startswith("netloop")}
    assert ours <= OPTIONS_MAY_IMPORT, f"netloop._options imports {sorted(ours - OPTIONS_MAY_IMPORT)}"
