"""Pareto fronts and hypervolumes of sweep trials (rows as ``analysis.load`` returns them).

The maths is ``analysis.pareto``'s; this layer decides which trials take part. By default
only completed trials that ran their full epoch budget: a pruned trial's objectives are
low-budget values that no full trial would be compared against, and failed or diverged
trials have none. ``all_trials=True`` ranks every row with objective values.

Objectives default to the ones the sweep optimised (``df.attrs["objectives"]``, set by
``load``), else ``analysis.pareto.DEFAULT_OBJECTIVES``; directions default to the sweep's
own for those objectives (``df.attrs["directions"]``), else all maximised.
The hypervolume's default reference is 0 for every objective: for accuracies in [0, 1] the
worst possible value, so hypervolumes of different sweeps are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import pareto
from analysis.labels import LEAD_PARAMS
from analysis.loading import load
from trainables.results import PARAM_PREFIX, STATUSES, full_budget

__all__ = [
    "Comparison",
    "compare",
    "directions_of",
    "finished",
    "front_members",
    "hypervolume",
    "hypervolume_progress",
    "objectives_of",
    "pareto_front",
]


def objectives_of(df: pd.DataFrame, objectives: Sequence[str] | None = None) -> list[str]:
    """``objectives``, else the sweep's own (``df.attrs``), else the default pair."""
    if objectives is not None:
        return list(objectives)
    return list(df.attrs.get("objectives") or pareto.DEFAULT_OBJECTIVES)


def directions_of(
    df: pd.DataFrame, objectives: Sequence[str], directions: Sequence[str] | None = None
) -> list[str] | None:
    """``directions``, else the sweep's own when ``objectives`` are its objectives, else None
    (all maximised)."""
    if directions is not None:
        return list(directions)
    recorded = df.attrs.get("directions")
    if recorded is not None and list(objectives) == list(df.attrs.get("objectives") or []):
        return list(recorded)
    return None


def finished(df: pd.DataFrame) -> pd.Series:
    """Rows of completed trials that ran their full budget (the default front candidates)."""
    return full_budget(df)


def _candidates(
    df: pd.DataFrame, objectives: Sequence[str] | None, all_trials: bool
) -> tuple[pd.DataFrame, list[str]]:
    """The objective columns, NaN where a row takes no part (``analysis.pareto`` skips NaN)."""
    names = objectives_of(df, objectives)
    missing = [name for name in names if name not in df]
    if missing:
        raise ValueError(f"unknown objective column(s) {missing}; available: {list(df.columns)}")
    values = df[names].astype(float)
    return (values if all_trials else values.where(finished(df))), names


def pareto_front(
    df: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    *,
    all_trials: bool = False,
) -> pd.DataFrame:
    """``on_front`` (bool) and non-dominated sorting ``rank`` (Int64, 0 = front) per row,
    indexed like ``df``; rows that take no part get ``on_front=False`` and ``rank=<NA>``."""
    values, names = _candidates(df, objectives, all_trials)
    return pareto.pareto_front(values, names, directions_of(df, names, directions))


def hypervolume(
    df: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    reference: Sequence[float] | None = None,
    *,
    all_trials: bool = False,
) -> float:
    """Hypervolume dominated by the (default: full-budget, completed) trials; the default
    reference is 0 per objective (required with minimised objectives)."""
    values, names = _candidates(df, objectives, all_trials)
    return pareto.hypervolume(values, names, directions_of(df, names, directions), reference)


def front_members(
    trials: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    *,
    varying_only: bool = False,
    extra: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The front's members, best first objective first: trial id, objectives, the search's
    test metrics and verifier, ``extra`` columns (indexed by trial id, e.g. re-certified
    accuracies), then the parameters (without ``param.``; method and teacher first) set in
    some member, or with ``varying_only`` only those that differ between members."""
    names = objectives_of(trials, objectives)
    modes = directions_of(trials, names, directions)
    front = trials[pareto_front(trials, names, modes)["on_front"]]
    tests = [
        c
        for c in ("test_clean_acc", "test_cert_acc", "test_verifier")
        if c in front and c not in names
    ]
    params = [c for c in front if c.startswith(PARAM_PREFIX) and front[c].notna().any()]
    lead = [PARAM_PREFIX + name for name in LEAD_PARAMS]
    params.sort(key=lambda c: lead.index(c) if c in lead else len(lead))  # stable
    if varying_only:
        params = [c for c in params if front[c].astype(str).nunique(dropna=False) > 1]
    table = front[["trial_id", *names, *tests]]
    if extra is not None:
        table = table.join(extra, on="trial_id")
    table = pd.concat(
        [table, front[params].rename(columns=lambda c: c[len(PARAM_PREFIX) :])], axis=1
    )
    descending = modes is None or modes[0] == "maximize"
    return table.sort_values(names[0], ascending=not descending).reset_index(drop=True)


def _trial_order(df: pd.DataFrame) -> pd.Index:
    """Rows in the order the trials ended (``written_at``, then trial id)."""
    keys = [key for key in ("written_at", "trial_id") if key in df]
    return df.sort_values(keys, kind="stable").index if keys else df.index


def hypervolume_progress(
    df: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    reference: Sequence[float] | None = None,
    *,
    all_trials: bool = False,
) -> pd.Series:
    """Hypervolume after each trial, in the order the trials ended (indexed by row)."""
    order = _trial_order(df)
    values, names = _candidates(df.loc[order], objectives, all_trials)
    modes = directions_of(df, names, directions)
    curve = pareto.hypervolume_progress(values, names, modes, reference)
    return pd.Series(curve, index=order, name="hypervolume")


@dataclass(frozen=True)
class Comparison:
    """``summary``: one row per sweep (trial counts, front size, hypervolume, best value of
    each objective); ``fronts``: the front members of every sweep (with ``sweep``)."""

    summary: pd.DataFrame
    fronts: pd.DataFrame


def compare(
    *sweeps: str | pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    reference: Sequence[float] | None = None,
) -> Comparison:
    """Fronts and hypervolumes of several sweeps side by side, under one reference point.

    Each argument is a location (path or URI, loaded with ``load``) or a frame of trial rows;
    a frame or a storage folder holding several sweeps contributes each of them.
    """
    frames = [load(sweep) if isinstance(sweep, str) else sweep for sweep in sweeps]
    if not frames:
        raise ValueError("compare() needs at least one sweep")
    names = objectives_of(frames[0], objectives)
    directions = directions_of(frames[0], names, directions)
    seen: dict[str, int] = {}
    rows, fronts = [], []
    for position, frame in enumerate(frames):
        for sweep, trials in frame.groupby("sweep", sort=False):
            if seen.setdefault(str(sweep), position) != position:
                raise ValueError(f"sweep {sweep!r} is given twice (rename one to compare them)")
            front = pareto_front(trials, names, directions)
            done = trials[finished(trials)]
            counts = trials["status"].value_counts()
            rows.append(
                {
                    "sweep": sweep,
                    "trials": len(trials),
                    **{status: int(counts.get(status, 0)) for status in STATUSES},
                    "front_size": int(front["on_front"].sum()),
                    "hypervolume": hypervolume(trials, names, directions, reference),
                    **{
                        f"best {name}": _best(done[name], directions, i)
                        for i, name in enumerate(names)
                    },
                }
            )
            fronts.append(trials[front["on_front"]].assign(rank=front["rank"]))
    fronts = [front for front in fronts if not front.empty]
    front_rows = pd.concat(fronts, ignore_index=True) if fronts else frames[0].iloc[:0]
    return Comparison(pd.DataFrame(rows).set_index("sweep"), front_rows)


def _best(values: pd.Series, directions: Sequence[str] | None, i: int) -> float:
    if values.dropna().empty:
        return np.nan
    minimise = directions is not None and directions[i] == "minimize"
    return float(values.min() if minimise else values.max())
