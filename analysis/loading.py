"""Loading sweep results for analysis: the trial (and epoch) rows of one or several sweeps.

A sweep lives at ``<storage>/<sweep>/`` with ``trials/`` and ``epochs/`` Parquet files
(``sweeps.results`` writes and reads them; this module reuses its readers). A location is a
local path or a URI: pyarrow's own schemes (``file://``, ``s3://``, ``gs://``, ``hdfs://``,
``mock://``) and, as a fallback, any fsspec scheme (``memory://``, ``az://``, ...) wrapped in
``pyarrow.fs.PyFileSystem``. A location may also be a storage folder holding several sweeps.

Schema versions. Every file records its version in its metadata
(``certsweep.schema_version``) and every row in the ``schema_version`` column. Readable:

- 1: the current layout (``sweeps.results.trial_schema``).
- 0: the pre-release layout, read through a migration: the epochs run were called
  ``epochs`` (now ``epochs_run``), a full-budget trial's status was ``finished`` (now
  ``completed``), and there were no ``test_verifier``, ``nan_reason``, ``device_hours``,
  ``code_version`` or ``written_at`` columns (they read as null). Epoch files did not change.

Any other version, or a file without the key, is refused with an error naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, overload

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from sweeps.results import read_epochs, read_trials, resolve_storage

__all__ = [
    "READABLE_VERSIONS",
    "SchemaVersionError",
    "SweepData",
    "SweepLocation",
    "SweepNotFoundError",
    "find_sweeps",
    "load",
    "open_location",
]

VERSION_KEY = b"certsweep.schema_version"
OBJECTIVES_KEY = b"certsweep.objectives"
DIRECTIONS_KEY = b"certsweep.directions"  # written since the sink records modes (still v1)


class SchemaVersionError(ValueError):
    """A results file has a schema version this analysis cannot read."""


class SweepNotFoundError(FileNotFoundError):
    """A location holds no sweep results."""


#: Columns v0 lacked, with the dtypes the current reader gives them.
_ADDED_IN_V1 = {
    "test_verifier": "str",
    "nan_reason": "str",
    "device_hours": "float64",
    "code_version": "str",
    "written_at": "datetime64[us, UTC]",
}


_RENAMED_IN_V1 = {"epochs": "epochs_run"}


def _trials_from_v0(rows: pd.DataFrame) -> pd.DataFrame:
    """v0 -> v1: ``epochs`` -> ``epochs_run``, ``finished`` -> ``completed``, new columns null."""
    rows = rows.copy()
    for old, new in _RENAMED_IN_V1.items():
        if new in rows:  # files of both versions were read together
            rows[new] = rows[old].astype(rows[new].dtype)
            rows = rows.drop(columns=[old])
        else:
            rows = rows.rename(columns={old: new})
    rows["status"] = rows["status"].replace({"finished": "completed"})
    for name, dtype in _ADDED_IN_V1.items():
        if name not in rows:
            rows[name] = pd.Series(pd.NA if dtype == "str" else None, index=rows.index).astype(
                dtype
            )
    return rows


#: Version -> migration of that version's trial rows to the current layout (None: current).
TRIAL_MIGRATIONS: dict[int, Callable[[pd.DataFrame], pd.DataFrame] | None] = {
    0: _trials_from_v0,
    1: None,
}
READABLE_VERSIONS: tuple[int, ...] = tuple(sorted(TRIAL_MIGRATIONS))


@dataclass(frozen=True)
class SweepLocation:
    """One sweep: its filesystem, the storage path inside it, its name and a printable URI."""

    filesystem: pafs.FileSystem
    storage: str
    sweep: str
    uri: str

    @property
    def path(self) -> str:
        """``<storage>/<sweep>`` inside ``filesystem``."""
        return f"{self.storage}/{self.sweep}"

    def exists(self, relative: str) -> bool:
        return self.filesystem.get_file_info(f"{self.path}/{relative}").type != (
            pafs.FileType.NotFound
        )


class SweepData(NamedTuple):
    """Trial rows and epoch rows, as ``load(..., epochs=True)`` returns them."""

    trials: pd.DataFrame | pa.Table
    epochs: pd.DataFrame | pa.Table


def open_location(
    path_or_uri: str, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a location: ``sweeps.results.resolve_storage``, falling back
    to fsspec for schemes pyarrow does not know (e.g. ``memory://``)."""
    try:
        return resolve_storage(path_or_uri, filesystem)
    except pa.ArrowInvalid:
        if "://" not in path_or_uri:
            raise
        import fsspec.core  # only for schemes pyarrow lacks

        fs, path = fsspec.core.url_to_fs(path_or_uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


def find_sweeps(path_or_uri: str, filesystem: pafs.FileSystem | None = None) -> list[SweepLocation]:
    """The sweep at ``path_or_uri`` (a folder with ``trials/``), else the sweeps directly
    below it (a storage folder), by name."""
    fs, path = open_location(path_or_uri, filesystem)
    uri = path_or_uri.rstrip("/")
    parent, _, name = path.rpartition("/")
    here = SweepLocation(fs, parent, name, uri)
    if here.exists("trials"):
        return [here]
    children = []
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        for info in fs.get_file_info(pafs.FileSelector(path)):
            child = SweepLocation(fs, path, info.base_name, f"{uri}/{info.base_name}")
            if info.type == pafs.FileType.Directory and child.exists("trials"):
                children.append(child)
    if not children:
        raise SweepNotFoundError(
            f"no sweep results at {uri}: expected {uri}/trials/*.parquet, or sweep folders"
            " with a trials/ folder below it"
        )
    return sorted(children, key=lambda location: location.sweep)


def _file_metadata(location: SweepLocation, kind: str) -> dict[str, dict[bytes, bytes]]:
    """File path -> Parquet key-value metadata of every results file of one kind."""
    directory = f"{location.path}/{kind}"
    if not location.exists(kind):
        return {}
    dataset = ds.dataset(directory, filesystem=location.filesystem, format="parquet")
    return {
        fragment.path: fragment.physical_schema.metadata or {}
        for fragment in dataset.get_fragments()
    }


def _check_versions(location: SweepLocation, kind: str) -> list[Goals]:
    """Refuse files of unknown versions; returns each file's objectives (and directions)."""
    objectives = []
    for path, metadata in _file_metadata(location, kind).items():
        raw = metadata.get(VERSION_KEY)
        where = f"{location.uri}/{kind}/{path.rpartition('/')[2]}"
        if raw is None:
            raise SchemaVersionError(
                f"{where} has no {VERSION_KEY.decode()} metadata: not a certsweep results file"
            )
        version = int(raw)
        if version not in READABLE_VERSIONS:
            raise SchemaVersionError(
                f"{where} has schema version {version}; this analysis reads versions"
                f" {', '.join(map(str, READABLE_VERSIONS))} (a newer certsweep wrote it?)"
            )
        if OBJECTIVES_KEY in metadata:
            names = tuple(json.loads(metadata[OBJECTIVES_KEY]))
            modes = metadata.get(DIRECTIONS_KEY)
            objectives.append((names, None if modes is None else tuple(json.loads(modes))))
    return objectives


def _migrate(trials: pd.DataFrame) -> pd.DataFrame:
    """Bring every row to the current layout (current rows first, so their column order wins)."""
    parts = []
    for version, migration in sorted(TRIAL_MIGRATIONS.items(), reverse=True):
        rows = trials[trials["schema_version"] == version]
        if not rows.empty:
            parts.append(rows if migration is None else migration(rows))
    if len(parts) <= 1:
        return parts[0] if parts else trials
    # Read together, current rows carry old-only columns too (as nulls): drop them.
    return pd.concat(parts).loc[trials.index].drop(columns=list(_RENAMED_IN_V1), errors="ignore")


#: A file's objective names and their directions (None: not recorded, i.e. all maximised).
Goals = tuple[tuple[str, ...], tuple[str, ...] | None]


class _Sweep(NamedTuple):
    trials: pd.DataFrame
    epochs: pd.DataFrame | None
    objectives: list[Goals]


def _read_sweep(location: SweepLocation, epochs: bool) -> _Sweep:
    objectives = _check_versions(location, "trials")
    if epochs:
        _check_versions(location, "epochs")
    shared = {"filesystem": location.filesystem}
    trials = _migrate(read_trials(location.storage, location.sweep, **shared))
    history = read_epochs(location.storage, location.sweep, **shared) if epochs else None
    return _Sweep(trials, history, objectives)


def _selected(
    trials: pd.DataFrame, status: str | Collection[str] | None, full_budget: bool
) -> pd.Series:
    keep = pd.Series(True, index=trials.index)
    if status is not None:
        keep &= trials["status"].isin([status] if isinstance(status, str) else list(status))
    if full_budget:
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
    read = [_read_sweep(location, epochs) for location in locations]
    trials = _concat([part.trials for part in read])
    trials = trials[_selected(trials, status, full_budget)].reset_index(drop=True)
    goals = {goal for part in read for goal in part.objectives}
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
