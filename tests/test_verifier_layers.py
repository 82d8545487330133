"""The verifiers, attacks and evaluation sit in no import cycle of ``trainables``' packages.

Static: every ``import`` / ``from ... import`` statement of every module (function-level
ones included) is read from the source, and each module is mapped to its package under
``trainables`` (``trainables.certify.exact`` -> ``certify``, ``trainables.evaluation`` ->
``evaluation``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1] / "trainables"


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "trainables" and len(parts) > 1 else None


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        source = package_of(".".join(("trainables", *path.relative_to(ROOT).with_suffix("").parts)))
        if source is None or source == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in filter(None, map(package_of, targets)):
                if target != source:
                    graph.setdefault(source, set()).add(target)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), list(graph.get(start, ()))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return seen


@pytest.mark.parametrize("package", ["attacks", "certify", "evaluation", "certify_checkpoint"])
def test_no_import_cycle_passes_through(package: str) -> None:
    graph = package_graph()
    assert package in graph  # the scan found its imports
    cycle = sorted(p for p in reachable(graph, package) if package in reachable(graph, p))
    assert not cycle, f"{package} imports {cycle}, which import it back"


def test_the_layers_of_certification() -> None:
    graph = package_graph()
    assert "losses" not in graph["attacks"]  # the attacks' objectives live with the attacks
    assert not {"evaluation", "training", "config", "data"} & graph["certify"]
    assert "training" not in graph["evaluation"]
    assert {"certify", "evaluation", "training"} <= graph["certify_checkpoint"]
