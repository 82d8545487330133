"""Pareto fronts and hypervolume of sweep trials, independent of the Parquet schema.

Trials trade clean accuracy against certified accuracy, so a sweep has no single best trial:
the analysis reports the non-dominated trials (the Pareto front), the non-dominated sorting
rank of every trial, and the dominated hypervolume as one number that summarises a front (and,
trial by trial, how the search progressed).

Every function takes either a DataFrame, whose objective columns ``objectives`` names (None:
``DEFAULT_OBJECTIVES``), or a 2-D array of shape (n_points, n_objectives) with ``objectives``
left as None. Rows with NaN in any objective (failed or pruned trials) take no part: they get
no rank, are never on the front and add no hypervolume.

Why the hypervolume is written here: Optuna (the project's search library, >= 4) computes it
only in the private ``optuna._hypervolume`` module, which may change in any release; scipy has
none; pymoo/moocore would add a runtime dependency for one function and offers no incremental
"progress" curve. The code below is exact for any number of objectives: a sort-and-sweep in
2-D, a z-sweep over an incremental 2-D staircase in 3-D (O(n log n) plus list moves), and
slicing along the last objective (HSO) above that. The tests check it against pymoo/moocore
and against a brute-force union of boxes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_OBJECTIVES", "hypervolume", "hypervolume_progress", "pareto_front"]

DEFAULT_OBJECTIVES: tuple[str, ...] = ("val_clean_acc", "val_cert_acc")
_SIGNS = {"maximize": 1.0, "minimize": -1.0}

Points = pd.DataFrame | np.ndarray | Sequence[Sequence[float]]


def _names(value: Sequence[str], what: str) -> list[str]:
    # A bare string is a sequence of characters; reject it instead of reading "max" as 3 names.
    if isinstance(value, str):
        raise ValueError(f"{what} must be a sequence of strings, got the string {value!r}")
    return list(value)


def _matrix(
    data: Points, objectives: Sequence[str] | None
) -> tuple[np.ndarray, list[str], pd.Index]:
    """Objective values as a float matrix (NaN for missing), their names and the row index."""
    if isinstance(data, pd.DataFrame):
        names = _names(DEFAULT_OBJECTIVES if objectives is None else objectives, "objectives")
        if not names:
            raise ValueError("objectives must name at least one column")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"objectives are repeated: {repeated}")
        missing = [n for n in names if n not in data.columns]
        if missing:
            raise ValueError(
                f"unknown objective column(s) {missing}; available: {list(data.columns)}"
            )
        try:
            values = data[names].to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise ValueError(f"objective columns {names} must be numeric: {err}") from err
        return values, names, data.index
    if objectives is not None:
        raise ValueError("objectives name DataFrame columns; pass None with an array of points")
    values = np.asarray(data, dtype=float)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(
            f"points must be a 2-D array (n_points, n_objectives), got shape {values.shape}"
        )
    names = [f"objective {i}" for i in range(values.shape[1])]
    return values, names, pd.RangeIndex(len(values))


def _signs(directions: Sequence[str] | None, names: list[str]) -> np.ndarray:
    """+1 for maximised, -1 for minimised objectives, so that larger is always better."""
    dirs = ["maximize"] * len(names) if directions is None else _names(directions, "directions")
    if len(dirs) != len(names):
        raise ValueError(f"got {len(dirs)} directions {dirs} for {len(names)} objectives {names}")
    bad = [d for d in dirs if d not in _SIGNS]
    if bad:
        raise ValueError(f"bad direction(s) {bad}; use 'maximize' or 'minimize'")
    return np.array([_SIGNS[d] for d in dirs])


def _shifted(
    data: Points,
    objectives: Sequence[str] | None,
    directions: Sequence[str] | None,
    reference: Sequence[float] | None,
) -> np.ndarray:
    """Points as gains over the reference in a maximise-everything frame.

    A row is usable iff every gain is > 0 (it strictly dominates the reference); NaN rows fail
    that test too. Unusable rows are returned as well (callers that need trial order keep them).
    """
    values, names, _ = _matrix(data, objectives)
    signs = _signs(directions, names)
    if reference is None:
        minimised = [n for n, s in zip(names, signs, strict=True) if s < 0]
        if minimised:
            raise ValueError(f"a reference point is required for minimised objectives {minimised}")
        ref = np.zeros(len(names))
    else:
        ref = np.asarray(reference, dtype=float).reshape(-1)
        if len(ref) != len(names):
            raise ValueError(f"reference has {len(ref)} values for {len(names)} objectives {names}")
        if not np.all(np.isfinite(ref)):
            raise ValueError(f"reference must be finite, got {ref.tolist()}")
    return (values - ref) * signs


def pareto_front(
    df: Points,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Non-dominated sorting of the rows: columns ``on_front`` (bool) and ``rank`` (Int64).

    A row dominates another iff it is at least as good in every objective and strictly better
    in one, so identical rows never dominate each other (all copies share one rank). ``rank`` 0
    is the Pareto front, 1 the front once rank 0 is removed, and so on; NaN rows get ``<NA>``.
    The result is indexed like ``df`` so it can be joined back onto the trial table.

    Directions are "maximize" (default for all) or "minimize", one per objective.
    """
    values, names, index = _matrix(df, objectives)
    gains = values * _signs(directions, names)
    rank = pd.array([pd.NA] * len(gains), dtype="Int64")
    valid = np.flatnonzero(~np.isnan(gains).any(axis=1))
    if len(valid):
        rank[valid] = _sorting_ranks(gains[valid])
    return pd.DataFrame(
        {"on_front": (rank == 0).fillna(False).to_numpy(bool), "rank": rank}, index=index
    )


def _sorting_ranks(points: np.ndarray) -> np.ndarray:
    """Non-dominated sorting ranks (maximisation) of NaN-free points.

    After a lexicographically descending sort every dominator of a point comes before it, and a
    point's rank is one more than the largest rank among its dominators (0 if none), so one pass
    in that order fills the ranks without Deb's n x n dominance lists.
    """
    order = np.lexsort(points.T[::-1])[::-1]
    ordered = points[order]
    ranks = _ranks_2d(ordered) if points.shape[1] == 2 else _ranks_by_dominators(ordered)
    result = np.empty_like(ranks)
    result[order] = ranks
    return result


def _ranks_by_dominators(ordered: np.ndarray) -> np.ndarray:
    """Any number of objectives: O(n^2 m) time, O(n m) memory."""
    ranks = np.zeros(len(ordered), dtype=np.int64)
    for i in range(1, len(ordered)):
        earlier = ordered[:i]
        dominators = np.all(earlier >= ordered[i], axis=1) & np.any(earlier > ordered[i], axis=1)
        if dominators.any():
            ranks[i] = ranks[:i][dominators].max() + 1
    return ranks


def _ranks_2d(ordered: np.ndarray) -> np.ndarray:
    """Two objectives in O(n log n), the common case of thousands of trials.

    In sorted order the latest member of each front has that front's largest y, so it alone
    decides whether the front dominates the next point; and the fronts that do form a prefix
    0..r-1, so a binary search finds the rank r.
    """
    ranks = np.zeros(len(ordered), dtype=np.int64)
    last_x: list[float] = []
    last_y: list[float] = []
    for i, (x, y) in enumerate(ordered.tolist()):
        low, high = 0, len(last_y)
        while low < high:
            mid = (low + high) // 2
            # last_x[mid] >= x by the sort, so this is "front mid's latest member dominates".
            if last_y[mid] > y or (last_y[mid] == y and last_x[mid] > x):
                low = mid + 1
            else:
                high = mid
        if low == len(last_y):
            last_x.append(x)
            last_y.append(y)
        else:
            last_x[low], last_y[low] = x, y
        ranks[i] = low
    return ranks


class _Staircase:
    """Incremental 2-D dominated area (maximisation, reference at the origin).

    Keeps the non-dominated points sorted by x ascending (so y strictly descending); adding a
    point costs two bisections plus the points it removes, each removed at most once.
    """

    def __init__(self) -> None:
        self.xs: list[float] = []
        self.neg_ys: list[float] = []  # -y, ascending, so that bisect works on it
        self.area = 0.0

    def add(self, x: float, y: float) -> float:
        """Insert a point with x, y > 0 and return the area it adds."""
        xs, neg_ys = self.xs, self.neg_ys
        right = bisect_left(xs, x)  # first point with x' >= x: the highest of those
        if right < len(xs) and -neg_ys[right] >= y:
            return 0.0  # weakly dominated
        stop = bisect_right(xs, x)  # points before it have x' <= x
        start = bisect_left(neg_ys, -y, 0, stop)  # first of those with y' <= y: dominated
        x_left = xs[start - 1] if start else 0.0
        y_below = -neg_ys[stop] if stop < len(xs) else 0.0
        gained = (x - x_left) * (y - y_below)
        for k in range(start, stop):  # subtract what the dominated points already covered
            gained -= (xs[k] - x_left) * (-neg_ys[k] - y_below)
            x_left = xs[k]
        xs[start:stop] = [x]
        neg_ys[start:stop] = [-y]
        self.area += gained
        return gained


def _volume(points: np.ndarray) -> float:
    """Exact hypervolume of points with all coordinates > 0 against the origin."""
    n, m = points.shape
    if n == 0:
        return 0.0
    if m == 1:
        return float(points[:, 0].max())
    if m == 2:
        # Sweep x downwards: each point adds the band between the best y so far and its own y.
        ordered = points[np.lexsort((-points[:, 1], -points[:, 0]))]
        best_before = np.concatenate(([0.0], np.maximum.accumulate(ordered[:-1, 1])))
        return float(np.sum(ordered[:, 0] * np.clip(ordered[:, 1] - best_before, 0.0, None)))
    ordered = points[np.argsort(-points[:, -1], kind="stable")]
    depths = ordered[:, -1] - np.append(ordered[1:, -1], 0.0)
    total = 0.0
    if m == 3:
        # Sweep z downwards; the slab below each point is the staircase of all points so far.
        stairs = _Staircase()
        for (x, y), depth in zip(ordered[:, :2].tolist(), depths, strict=True):
            stairs.add(x, y)
            total += stairs.area * depth
        return total
    for i in np.flatnonzero(depths > 0):  # HSO: slices with zero depth add nothing
        total += _volume(ordered[: i + 1, :-1]) * depths[i]
    return total


def hypervolume(
    df_or_points: Points,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    reference: Sequence[float] | None = None,
) -> float:
    """Volume of objective space dominated by the points and bounded by ``reference``.

    The default reference is 0 for every objective, which suits maximised accuracies; with any
    minimised objective the reference must be given (there is no natural worst value). Points
    that do not strictly beat the reference in every objective, and NaN rows, add nothing.
    """
    gains = _shifted(df_or_points, objectives, directions, reference)
    return _volume(gains[np.all(gains > 0, axis=1)])


def hypervolume_progress(
    values_in_trial_order: Points,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    reference: Sequence[float] | None = None,
) -> np.ndarray:
    """Hypervolume of the first k trials for every k = 1..n (a search-progress curve).

    Incremental rather than n separate hypervolumes: in 2-D each trial updates a staircase in
    O(log n) amortised; in more dimensions each trial adds its exclusive contribution, the
    volume of its box minus the hypervolume of the current front clipped to that box (WFG).
    Arguments are as for :func:`hypervolume`; NaN rows leave the curve flat.
    """
    gains = _shifted(values_in_trial_order, objectives, directions, reference)
    usable = np.all(gains > 0, axis=1)
    increments = np.zeros(len(gains))
    if gains.shape[1] == 2:
        stairs = _Staircase()
        for i in np.flatnonzero(usable):
            increments[i] = stairs.add(gains[i, 0], gains[i, 1])
        return np.cumsum(increments)
    front = np.empty((0, gains.shape[1]))
    for i in np.flatnonzero(usable):
        point = gains[i]
        if np.any(np.all(front >= point, axis=1)):
            continue  # weakly dominated: no new volume
        increments[i] = np.prod(point) - _volume(np.minimum(front, point))
        front = np.vstack([front[~np.all(front <= point, axis=1)], point])
    return np.cumsum(increments)
