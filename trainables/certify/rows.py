"""The Parquet rows of a certification run: one row per (checkpoint, method, norm, radius).

A small, explicit, versioned schema beside the sweep's trial rows (``sweeps/results.py``),
which analysis can join on ``checkpoint`` (the trial row's ``checkpoint_uri``):

================  =========  ===============================================================
column            type       meaning
================  =========  ===============================================================
schema_version    int32      ``SCHEMA_VERSION``
checkpoint        string     the checkpoint path or URI as given
method            string     ``trainables.certify_checkpoint.METHODS``
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
certified_by      string     best: JSON ``{stage: fraction of n it certified}`` (sums to
                             cert_acc); null for other methods
lipschitz_const.  float64    Lipschitz: the certified upper bound of L (``lipschitz_constant``)
sigma             float64    smoothing: the noise level
seconds           float64    wall time of the method (all its radii together)
written_at        timestamp  UTC
================  =========  ===============================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trainables.attacks.autoattack import AA_COLUMNS

SCHEMA_VERSION = 1

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
        *(pa.field(name, pa.float64()) for name in AA_COLUMNS.values()),
        pa.field("milp_undecided", pa.float64()),
        pa.field("certified_by", pa.string()),
        pa.field("lipschitz_constant", pa.float64()),
        pa.field("sigma", pa.float64()),
        pa.field("seconds", pa.float64(), nullable=False),
        pa.field("written_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def result_rows(
    result: dict[str, Any], checkpoint: str, split: str, subset: int | None
) -> list[dict[str, Any]]:
    """Rows of ``ROW_SCHEMA`` from one ``certify_checkpoint.certify_or_attack`` result (one per
    radius)."""
    certified = result["kind"] == "certified"
    by_stage = result.get("certified_by")
    now = datetime.now(timezone.utc)
    optional = {
        name: result.get(name)
        for name in (*AA_COLUMNS.values(), "milp_undecided", "lipschitz_constant", "sigma")
    }
    return [
        {
            "schema_version": SCHEMA_VERSION,
            "checkpoint": checkpoint,
            "method": result["method"],
            "kind": result["kind"],
            "split": split,
            "subset": subset,
            "n": result["n"],
            "norm": point["norm"],
            "radius": point["radius"],
            "clean_acc": result["clean_acc"],
            "cert_acc": point["acc"] if certified else None,
            "robust_acc": None if certified else point["acc"],
            **optional,
            "certified_by": json.dumps(by_stage) if by_stage else None,
            "seconds": result["seconds"],
            "written_at": now,
        }
        for point in result["points"]
    ]


def write_rows(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the rows to one Parquet file (temporary name, then renamed: never partial)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=ROW_SCHEMA)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)
    return path
