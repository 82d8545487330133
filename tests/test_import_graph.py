"""No import cycle between certsweep's packages, and analysis / the training loop stay Ray-free.

The graph and its cycles: ``python tests/import_graph.py``. ``KNOWN_EDGES`` are imports that
close cycles in parts other work is folding (each with the reason); the test fails when one
of them disappears, so the list only shrinks.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from import_graph import ROOT, cycles, graph, imports

#: Known imports that still close a cycle; remove an entry when its import is gone.
KNOWN_EDGES: set[tuple[str, str]] = set()


def test_no_cycle_between_packages() -> None:
    components = cycles(graph(allowed=KNOWN_EDGES))
    assert not components, f"import cycles: {components}; run python tests/import_graph.py"


def test_known_edges_still_exist() -> None:
    edges = {(found.source, found.target) for found in imports()}
    gone = sorted(KNOWN_EDGES - edges)
    assert not gone, f"remove from KNOWN_EDGES (the import is gone): {gone}"


def test_the_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}}) == []


def test_analysis_never_imports_sweeps() -> None:
    assert not [f for f in imports() if f.source == "analysis" and f.target == "sweeps"]


#: Modules that must import without Ray (and without the sweep driver).
RAY_FREE = [
    "analysis",
    "analysis.loading",
    "analysis.front",
    "analysis.report",
    "analysis.plots",
    "analysis.importance",
    "analysis.recertify",
    "trainables.training",
    "trainables.training.loop",
    "trainables.training.teacher_cache",
    "trainables.results",
    "trainables.certify.rows",
]


def test_analysis_and_the_training_loop_import_without_ray() -> None:
    """In a fresh interpreter: importing them leaves Ray and ``sweeps`` unloaded."""
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {RAY_FREE!r}:
            importlib.import_module(name)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "sweeps")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
