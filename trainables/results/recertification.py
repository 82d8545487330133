"""Re-certification rows: Parquet next to the sweep, apart from its own files.

Layout: ``<storage>/<sweep>/recertified/<verifier>-<split>/trial=<trial_id>.parquet``, one row
per re-certified trial (``RECERTIFIED_SCHEMA``); the sweep's ``trials/`` and ``epochs/`` are
never touched. A good result is never replaced by a worse-founded one: a new row replaces the
stored one only when the stored one failed, or the new one completed on at least as many
examples; otherwise the stored row is kept unless ``overwrite`` says otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.results.reading import OWN_FILE, DamagedFileWarning
from trainables.results.schema import SCHEMA_VERSION, UTC_TIMESTAMP, file_metadata
from trainables.results.status import COMPLETED
from trainables.results.storage import SweepLocation, write_atomic

FOLDER = "recertified"
_COUNT = pa.int64()
RECERTIFIED_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("sweep", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("verifier", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "completed" or "failed"
        pa.field("error", pa.string()),
        pa.field("eps", pa.float64()),
        pa.field("subset", _COUNT),  # null: the whole split
        pa.field("n", _COUNT),
        pa.field("clean_acc", pa.float64()),
        pa.field("cert_acc", pa.float64()),
        pa.field("milp_undecided", pa.float64()),  # MILP: share without a verdict in time
        pa.field("bab_undecided", pa.float64()),  # BaB: the same
        pa.field("certified_by", pa.string()),  # cascades: JSON {stage: share it certified}
        pa.field("search_verifier", pa.string()),  # the trial's own final verifier ...
        pa.field("search_cert_acc", pa.float64()),  # ... and its certified accuracy
        pa.field("seconds", pa.float64()),
        pa.field("device", pa.string()),
        pa.field("checkpoint_uri", pa.string()),
        pa.field("written_at", UTC_TIMESTAMP, nullable=False),
    ],
    metadata=file_metadata(FOLDER),
)


def _in_layout(table: pa.Table) -> pa.Table:
    """A stored table in ``RECERTIFIED_SCHEMA``; a column added since it was written (v1
    grows by nullable columns, e.g. ``certified_by``) reads as null."""
    for field in RECERTIFIED_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(len(table), field.type))
    return table.select(RECERTIFIED_SCHEMA.names).cast(RECERTIFIED_SCHEMA)


def recertified_dir(location: SweepLocation, verifier: str, split: str) -> str:
    """Where one verifier's results on one split go, inside ``location.filesystem``."""
    return f"{location.path}/{FOLDER}/{verifier}-{split}"


def _stored(location: SweepLocation, path: str) -> dict[str, Any] | None:
    try:
        return pq.read_table(path, filesystem=location.filesystem).to_pylist()[0]
    except FileNotFoundError:
        return None
    except (pa.ArrowInvalid, OSError, IndexError):
        return None  # damaged: nothing worth keeping


def replaces(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether ``new`` may replace the stored row ``old`` without ``overwrite``."""
    if old is None or old.get("status") != COMPLETED:
        return True
    return new.get("status") == COMPLETED and (new.get("n") or 0) >= (old.get("n") or 0)


def write_recertified(
    location: SweepLocation, row: Mapping[str, Any], *, overwrite: bool = False
) -> dict[str, Any] | None:
    """Write one trial's re-certification row (missing fields are null); returns None when
    written, else the stored row that was kept (see the module docstring).

    A completed row must have certified at least one example (``n >= 1``).
    """
    if row.get("status") == COMPLETED and not (row.get("n") or 0) >= 1:
        raise ValueError(f"trial {row['trial_id']}: a completed row needs n >= 1 examples")
    directory = recertified_dir(location, row["verifier"], row["split"])
    name = f"trial={row['trial_id']}.parquet"
    old = _stored(location, f"{directory}/{name}")
    if not overwrite and not replaces(row, old):
        return old
    values = {
        "schema_version": SCHEMA_VERSION,
        "sweep": location.sweep,
        "written_at": datetime.now(timezone.utc),
        **row,
    }
    table = pa.Table.from_pylist(
        [{field.name: values.get(field.name) for field in RECERTIFIED_SCHEMA}],
        schema=RECERTIFIED_SCHEMA,
    )
    write_atomic(location.filesystem, directory, name, table)
    return None


def read_recertified(location: SweepLocation) -> pd.DataFrame:
    """Every re-certification row of the sweep (empty frame when there are none)."""
    tables = []
    if location.exists(FOLDER):
        selector = pafs.FileSelector(f"{location.path}/{FOLDER}", recursive=True)
        for info in location.filesystem.get_file_info(selector):
            if info.type != pafs.FileType.File or not OWN_FILE.fullmatch(info.base_name):
                continue
            try:
                tables.append(pq.read_table(info.path, filesystem=location.filesystem))
            except (pa.ArrowInvalid, OSError) as err:
                warnings.warn(
                    f"damaged results file {info.path} ({err}): skipped",
                    DamagedFileWarning,
                    stacklevel=2,
                )
    if not tables:
        return RECERTIFIED_SCHEMA.empty_table().to_pandas()
    table = pa.concat_tables([_in_layout(t) for t in tables])
    rows = table.to_pandas()
    return rows.sort_values(["verifier", "split", "trial_id"]).reset_index(drop=True)
