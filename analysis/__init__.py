"""Analysis of sweep results: loading, Pareto fronts, hypervolume, plots, reports.

    import analysis
    trials = analysis.load("sweeps-results/demo")               # one row per trial
    front = trials[analysis.pareto_front(trials)["on_front"]]
    analysis.hypervolume(trials)                                # reference (0, 0)

The names below are imported on first use: the sweep driver imports ``analysis.pareto``
and should not pay for matplotlib and Optuna's importance evaluators. Re-certification
(which imports torch) lives in ``analysis.recertify``; the command line is
``python -m analysis`` (see ``analysis.__main__``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "analysis.front": (
        "Comparison",
        "compare",
        "finished",
        "hypervolume",
        "hypervolume_progress",
        "pareto_front",
    ),
    "analysis.importance": ("param_importances",),
    "analysis.loading": ("SchemaVersionError", "SweepData", "SweepNotFoundError", "load"),
    "analysis.plots": (
        "front_figure",
        "hypervolume_figure",
        "importance_figure",
        "learning_curves_figure",
    ),
    "analysis.report": ("build_report",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
