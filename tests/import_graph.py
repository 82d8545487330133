"""The import graph between certsweep's packages, and its cycles (static, nothing imported).

    python tests/import_graph.py          # prints the package graph and any cycle

Nodes are the top-level packages ``sweeps``, ``analysis``, ``search_spaces`` and each
subpackage or top-level module of ``trainables`` (``trainables.training``,
``trainables.config``, ...). An edge A -> B means some module of A imports one of B, at
module level or inside a function (a lazy import is still a dependency); imports under
``if TYPE_CHECKING:`` are left out (they never run). ``tests/test_import_graph.py`` asserts
that the graph has no cycle.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "sweeps", "analysis", "search_spaces")


@dataclass(frozen=True)
class Import:
    """One import statement that crosses nodes: where it is and what it names."""

    source: str  # node
    target: str  # node
    file: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def node_of(module: str) -> str | None:
    """The graph node of a dotted module name, or None when it is not certsweep's."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    return ".".join(parts[:2]) if parts[0] == "trainables" and len(parts) > 1 else parts[0]


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _targets(statement: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules one import statement loads (``from a import b`` loads ``a.b`` when b is a
    module)."""
    if isinstance(statement, ast.Import):
        return [alias.name for alias in statement.names]
    base = statement.module or ""
    if statement.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(statement.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}".rstrip(".") if base else package
    named = [f"{base}.{alias.name}" for alias in statement.names]
    return [name for name in named if _is_module(name)] or [base]


def imports() -> Iterator[Import]:
    """Every import of one certsweep node by another."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = module_name(path)
            source = node_of(module)
            tree = ast.parse(path.read_text(), filename=str(path))
            skipped = _type_checking_lines(tree)
            for statement in ast.walk(tree):
                if not isinstance(statement, ast.Import | ast.ImportFrom):
                    continue
                if statement.lineno in skipped:
                    continue
                for target in _targets(statement, module, path.name == "__init__.py"):
                    node = node_of(target)
                    if node is not None and source is not None and node != source:
                        relative = str(path.relative_to(ROOT))
                        yield Import(source, node, relative, statement.lineno)


def graph(allowed: set[tuple[str, str]] = frozenset()) -> dict[str, set[str]]:
    """Node -> the nodes it imports, without the ``allowed`` edges."""
    edges: dict[str, set[str]] = defaultdict(set)
    for found in imports():
        if (found.source, found.target) not in allowed:
            edges[found.source].add(found.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(set(edges) | {t for targets in edges.values() for t in targets}):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(component: list[str]) -> str:
    """The imports that tie one cycle together, one per line with file and line."""
    members = set(component)
    lines = [f"cycle between {', '.join(component)}:"]
    for found in imports():
        if found.source in members and found.target in members:
            lines.append(f"  {found.source} -> {found.target}  ({found.file}:{found.line})")
    return "\n".join(dict.fromkeys(lines))


def main() -> int:
    edges = graph()
    for node in sorted(edges):
        print(f"{node} -> {', '.join(sorted(edges[node]))}")
    components = cycles(edges)
    for component in components:
        print(describe(component))
    print(f"{len(components)} cycle(s)")
    return 1 if components else 0


if __name__ == "__main__":
    sys.exit(main())
