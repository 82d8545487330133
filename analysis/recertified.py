"""Re-certification results as Parquet, next to the sweep and apart from its own files.

Layout: ``<storage>/<sweep>/recertified/<verifier>-<split>/trial=<trial_id>.parquet``, one row
per re-certified trial (``RECERTIFIED_SCHEMA``); the sweep's ``trials/`` and ``epochs/`` are
never touched. A repeated run with the same verifier and split replaces its own rows.
Files are written atomically (``sweeps.results.write_atomic``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from analysis.loading import SweepLocation
from sweeps.results import write_atomic

__all__ = ["RECERTIFIED_SCHEMA", "read_recertified", "recertified_dir", "write_recertified"]

FOLDER = "recertified"
SCHEMA_VERSION = 1
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
        pa.field("certified_by", pa.string()),  # best: JSON {stage: share it certified}
        pa.field("search_verifier", pa.string()),  # the trial's own final verifier ...
        pa.field("search_cert_acc", pa.float64()),  # ... and its certified accuracy
        pa.field("seconds", pa.float64()),
        pa.field("device", pa.string()),
        pa.field("checkpoint_uri", pa.string()),
        pa.field("written_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={
        b"certsweep.schema_version": str(SCHEMA_VERSION).encode(),
        b"certsweep.kind": FOLDER.encode(),
    },
)


def recertified_dir(location: SweepLocation, verifier: str, split: str) -> str:
    """Where one verifier's results on one split go, inside ``location.filesystem``."""
    return f"{location.path}/{FOLDER}/{verifier}-{split}"


def write_recertified(location: SweepLocation, row: Mapping[str, Any]) -> None:
    """Write one trial's re-certification row (missing fields are null)."""
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
    directory = recertified_dir(location, row["verifier"], row["split"])
    write_atomic(location.filesystem, directory, f"trial={row['trial_id']}.parquet", table)


def read_recertified(location: SweepLocation) -> pd.DataFrame:
    """Every re-certification row of the sweep (empty frame when there are none)."""
    if not location.exists(FOLDER):
        return RECERTIFIED_SCHEMA.empty_table().to_pandas()
    dataset = ds.dataset(
        f"{location.path}/{FOLDER}",
        schema=RECERTIFIED_SCHEMA,
        filesystem=location.filesystem,
        format="parquet",
    )
    return dataset.to_table().to_pandas().sort_values(["verifier", "split", "trial_id"])
