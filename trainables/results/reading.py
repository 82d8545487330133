"""Reading a sweep's trial and epoch rows: only its own files, checked, damaged ones set aside.

Own files are ``<kind>/trial=<trial_id>.parquet``; anything else in those folders (a stray
``notes.txt``, hidden temporary files, files set aside) is ignored. Each file's schema
version is checked (``SchemaVersionError`` names the file) and old trial rows are migrated.
A file that cannot be read (truncated by a crash, corrupted) does not block the others: it
is reported with a ``DamagedFileWarning`` and, with ``set_aside=True`` (what the sweep
driver does before resuming, so the trial is run again), renamed out of the way.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.results.migrations import READABLE_VERSIONS, SchemaVersionError, migrate_trials
from trainables.results.schema import (
    DIRECTIONS_KEY,
    EPOCHS,
    OBJECTIVES_KEY,
    TRIALS,
    VERSION_KEY,
    trial_schema,
)
from trainables.results.storage import SweepLocation, exists, set_aside

OWN_FILE = re.compile(r"trial=(?P<trial_id>[^/]+)\.parquet")

#: A file's objective names and their directions (None: not recorded, i.e. all maximised).
Goals = tuple[tuple[str, ...], tuple[str, ...] | None]


class DamagedFileWarning(UserWarning):
    """A results file could not be read and was skipped (or set aside)."""


@dataclass
class SweepRows:
    """What ``read_sweep`` found: the rows, each file's objectives, the damaged files."""

    trials: pd.DataFrame
    epochs: pd.DataFrame | None
    goals: list[Goals] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)


def own_files(location: SweepLocation, kind: str) -> list[str]:
    """Paths of the sweep's own files of one kind, by name."""
    directory = f"{location.path}/{kind}"
    if not exists(location.filesystem, directory):
        return []
    infos = location.filesystem.get_file_info(pafs.FileSelector(directory))
    names = [i.base_name for i in infos if i.type == pafs.FileType.File]
    return [f"{directory}/{name}" for name in sorted(names) if OWN_FILE.fullmatch(name)]


def _check_version(location: SweepLocation, path: str, metadata: dict[bytes, bytes]) -> None:
    where = f"{location.uri}/{path.removeprefix(location.path + '/')}"
    raw = metadata.get(VERSION_KEY)
    if raw is None:
        raise SchemaVersionError(
            f"{where} has no {VERSION_KEY.decode()} metadata: not a certsweep results file"
        )
    version = int(raw)
    if version not in READABLE_VERSIONS:
        raise SchemaVersionError(
            f"{where} has schema version {version}; this code reads versions"
            f" {', '.join(map(str, READABLE_VERSIONS))} (a newer certsweep wrote it?)"
        )


def _goals(metadata: dict[bytes, bytes]) -> Goals | None:
    if OBJECTIVES_KEY not in metadata:
        return None
    modes = metadata.get(DIRECTIONS_KEY)
    return tuple(json.loads(metadata[OBJECTIVES_KEY])), (
        None if modes is None else tuple(json.loads(modes))
    )


def _read_kind(
    location: SweepLocation, kind: str, set_aside_damaged: bool, found: SweepRows
) -> pa.Table | None:
    """All readable own files of one kind as one table over the union of their schemas."""
    tables = []
    for path in own_files(location, kind):
        try:
            table = pq.read_table(path, filesystem=location.filesystem)
        except (pa.ArrowInvalid, OSError) as err:
            moved = set_aside(location.filesystem, path) if set_aside_damaged else None
            found.damaged.append(path)
            action = f"set aside as {moved}" if moved else "skipped"
            warnings.warn(
                f"damaged results file {path} ({err}): {action}", DamagedFileWarning, stacklevel=3
            )
            continue
        metadata = table.schema.metadata or {}
        _check_version(location, path, metadata)
        if kind == TRIALS and (goals := _goals(metadata)) is not None:
            found.goals.append(goals)
        tables.append(table.replace_schema_metadata(None))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Integers and booleans as pandas' nullable dtypes, so a parameter column with inactive
    (null) entries keeps its type instead of turning into float or object."""
    nullable = {
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    return table.to_pandas(types_mapper=nullable.get)


def empty_trials() -> pd.DataFrame:
    return _to_pandas(trial_schema({}).empty_table())


def read_sweep(
    location: SweepLocation, *, epochs: bool = True, set_aside_damaged: bool = False
) -> SweepRows:
    """The trial rows (migrated, by trial id) and, with ``epochs``, the epoch rows."""
    found = SweepRows(empty_trials(), None)
    table = _read_kind(location, TRIALS, set_aside_damaged, found)
    if table is not None:
        found.trials = migrate_trials(_to_pandas(table.sort_by("trial_id")))
    if epochs:
        history = _read_kind(location, EPOCHS, set_aside_damaged, found)
        if history is None:
            found.epochs = pd.DataFrame(
                {"sweep": [], "trial_id": [], "epoch": pd.array([], "Int32")}
            )
        else:
            order = [("trial_id", "ascending"), ("epoch", "ascending")]
            found.epochs = _to_pandas(history.sort_by(order))
    return found


def read_trials(
    storage: str, sweep: str, *, filesystem: pafs.FileSystem | None = None
) -> pd.DataFrame:
    """One row per written trial, ordered by trial id (empty frame when none yet)."""
    return read_sweep(SweepLocation.of(storage, sweep, filesystem), epochs=False).trials


def read_epochs(
    storage: str, sweep: str, *, filesystem: pafs.FileSystem | None = None
) -> pd.DataFrame:
    """One row per trial and epoch, ordered; a metric a trial never reported is NaN."""
    epochs = read_sweep(SweepLocation.of(storage, sweep, filesystem)).epochs
    assert epochs is not None
    return epochs
