"""The Parquet rows of a certification run: one row per (checkpoint, method, norm, radius).

``python -m trainables.certify_checkpoint --out ROWS.parquet`` writes them
(``trainables.certify.rows`` builds the rows from a certification result); analysis can join
them on ``checkpoint`` (the trial row's ``checkpoint_uri``). The columns are listed literally:
they are a contract.

================  =========  ===============================================================
column            type       meaning
================  =========  ===============================================================
schema_version    int32      ``SCHEMA_VERSION``
checkpoint        string     the checkpoint path or URI as given
method            string     the certification method or attack
kind              string     "certified" or "empirical" (an attack: an upper bound)
split, subset     string,    dataset split; first N samples (null: all)
                  int64
n                 int64      samples evaluated
norm, radius      string,    "linf" or "l2" and the radius of the ball
                  float64
clean_acc         float64    the (base) classifier's accuracy on the clean samples
cert_acc          float64    certified accuracy (null for attacks)
robust_acc        float64    empirical robust accuracy (null for certificates)
aa_<attack>_acc   float64    AutoAttack: accuracy after apgd_ce, apgd_t, fab_t, square
milp_undecided    float64    MILP: fraction without a verdict in the time limit
bab_undecided     float64    branch and bound: the same
certified_by      string     cascades (best): JSON ``{stage: fraction of n it certified}``
lipschitz_const.  float64    Lipschitz: the certified upper bound of L (``lipschitz_constant``)
sigma             float64    smoothing: the noise level
seconds           float64    wall time of the method (all its radii together)
written_at        timestamp  UTC
================  =========  ===============================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.results.migrations import SchemaVersionError
from trainables.results.schema import SCHEMA_VERSION, UTC_TIMESTAMP, VERSION_KEY, file_metadata
from trainables.results.storage import write_atomic

KIND = "certification"
AA_COLUMNS = ("aa_apgd_ce_acc", "aa_apgd_t_acc", "aa_fab_t_acc", "aa_square_acc")

ROW_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("checkpoint", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("subset", pa.int64()),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("norm", pa.string(), nullable=False),
        pa.field("radius", pa.float64(), nullable=False),
        pa.field("clean_acc", pa.float64(), nullable=False),
        pa.field("cert_acc", pa.float64()),
        pa.field("robust_acc", pa.float64()),
        *(pa.field(name, pa.float64()) for name in AA_COLUMNS),
        pa.field("milp_undecided", pa.float64()),
        pa.field("bab_undecided", pa.float64()),
        pa.field("certified_by", pa.string()),
        pa.field("lipschitz_constant", pa.float64()),
        pa.field("sigma", pa.float64()),
        pa.field("seconds", pa.float64(), nullable=False),
        pa.field("written_at", UTC_TIMESTAMP, nullable=False),
    ],
    metadata=file_metadata(KIND),
)


def write_rows(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the rows to one local Parquet file, atomically (never partial)."""
    path = Path(path).absolute()
    table = pa.Table.from_pylist(
        [{"schema_version": SCHEMA_VERSION, **row} for row in rows], schema=ROW_SCHEMA
    )
    write_atomic(pafs.LocalFileSystem(), str(path.parent), path.name, table)
    return path


def read_rows(path: str | os.PathLike[str]) -> pa.Table:
    """Rows written by ``write_rows``; refuses files of another schema version."""
    table = pq.read_table(path)
    version = (table.schema.metadata or {}).get(VERSION_KEY)
    if version is None or int(version) != SCHEMA_VERSION:
        raise SchemaVersionError(f"{path}: not certification rows of schema {SCHEMA_VERSION}")
    return table
