"""Loading sweep results for analysis: the trial (and epoch) rows of one or several sweeps.

A sweep lives at ``<storage>/<sweep>/`` with ``trials/`` and ``epochs/`` Parquet files; the
results contract (``trainables.results``) reads them: only the sweep's own files, each
checked for its schema version (older versions migrated, unknown ones refused with an error
naming the file), a damaged file skipped with a ``DamagedFileWarning``. A location is a
local path or a URI (pyarrow's schemes and, as a fallback, fsspec's), or a storage folder
holding several sweeps.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Literal, NamedTuple, overload

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from trainables.results import (
    READABLE_VERSIONS,
    SchemaVersionError,
    SweepLocation,
    SweepNotFoundError,
    find_sweeps,
    read_sweep,
)

__all__ = [
    "READABLE_VERSIONS",
    "SchemaVersionError",
    "SweepData",
    "SweepLocation",
    "SweepNotFoundError",
    "find_sweeps",
    "load",
]


class SweepData(NamedTuple):
    """Trial rows and epoch rows, as ``load(..., epochs=True)`` returns them."""

    trials: pd.DataFrame | pa.Table
    epochs: pd.DataFrame | pa.Table


def _selected(trials: pd.DataFrame, status: str | Collection[str] | None, full: bool) -> pd.Series:
    keep = pd.Series(True, index=trials.index)
    if status is not None:
        keep &= trials["status"].isin([status] if isinstance(status, str) else list(status))
    if full:
        keep &= (trials["epochs_run"] >= trials["total_epochs"]).fillna(False).astype(bool)
    return keep


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows of several sweeps (empty frames would only add all-null columns)."""
    filled = [frame for frame in frames if not frame.empty] or frames[:1]
    return pd.concat(filled, ignore_index=True) if len(filled) > 1 else filled[0]


@overload
def load(
    path_or_uri: str | Iterable[str],
    *,
    status: str | Collection[str] | None = ...,
    full_budget: bool = ...,
    epochs: Literal[False] = ...,
    as_table: Literal[False] = ...,
    filesystem: pafs.FileSystem | None = ...,
) -> pd.DataFrame: ...
@overload
def load(
    path_or_uri: str | Iterable[str],
    *,
    status: str | Collection[str] | None = ...,
    full_budget: bool = ...,
    epochs: Literal[True],
    as_table: bool = ...,
    filesystem: pafs.FileSystem | None = ...,
) -> SweepData: ...
@overload
def load(
    path_or_uri: str | Iterable[str],
    *,
    status: str | Collection[str] | None = ...,
    full_budget: bool = ...,
    epochs: Literal[False] = ...,
    as_table: Literal[True],
    filesystem: pafs.FileSystem | None = ...,
) -> pa.Table: ...
def load(
    path_or_uri: str | Iterable[str],
    *,
    status: str | Collection[str] | None = None,
    full_budget: bool = False,
    epochs: bool = False,
    as_table: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> pd.DataFrame | pa.Table | SweepData:
    """The trial rows of one or several sweeps (paths, URIs, or storage folders of sweeps).

    ``status`` keeps rows with that status (or any of several: "completed", "pruned",
    "failed", "diverged"); ``full_budget`` keeps trials that ran all their epochs. With
    ``epochs=True`` returns ``(trials, epochs)``, the epochs of the kept trials only;
    ``as_table=True`` gives pyarrow Tables instead of DataFrames. ``filesystem``: the
    location is a path inside it (for filesystems that a URI cannot reopen).

    The frame's ``attrs["objectives"]`` (and ``attrs["directions"]``) hold the objectives the
    sweeps optimised and their directions (from the files' metadata) when all of them agree;
    the analysis functions default to them.
    """
    paths = [path_or_uri] if isinstance(path_or_uri, str) else list(path_or_uri)
    if not paths:
        raise ValueError("load() needs at least one sweep location")
    locations = [loc for path in paths for loc in find_sweeps(path, filesystem)]
    read = [read_sweep(location, epochs=epochs) for location in locations]
    trials = _concat([part.trials for part in read])
    trials = trials[_selected(trials, status, full_budget)].reset_index(drop=True)
    goals = {goal for part in read for goal in part.goals}
    if len(goals) == 1:
        names, modes = goals.pop()
        trials.attrs["objectives"] = list(names)
        if modes is not None:
            trials.attrs["directions"] = list(modes)
    if not epochs:
        return pa.Table.from_pandas(trials, preserve_index=False) if as_table else trials
    history = _concat([part.epochs for part in read if part.epochs is not None])
    kept = pd.MultiIndex.from_frame(trials[["sweep", "trial_id"]])
    history = history[
        pd.MultiIndex.from_frame(history[["sweep", "trial_id"]]).isin(kept)
    ].reset_index(drop=True)
    if as_table:
        return SweepData(
            pa.Table.from_pandas(trials, preserve_index=False),
            pa.Table.from_pandas(history, preserve_index=False),
        )
    return SweepData(trials, history)
