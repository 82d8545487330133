"""The Parquet rows of a certification run, built from ``certify_or_attack`` results
(``trainables.certify_checkpoint``).

The schema, its version and the writer are the results contract's
(``trainables.results.certification``: one row per checkpoint, method, norm and radius);
this module maps a certification result onto it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from trainables.results.certification import AA_COLUMNS, ROW_SCHEMA, write_rows
from trainables.results.schema import SCHEMA_VERSION

__all__ = ["ROW_SCHEMA", "result_rows", "write_rows"]


def result_rows(
    result: dict[str, Any], checkpoint: str, split: str, subset: int | None
) -> list[dict[str, Any]]:
    """Rows of ``ROW_SCHEMA`` from one ``certify_or_attack`` result (one per radius)."""
    certified = result["kind"] == "certified"
    by_stage = result.get("certified_by")
    now = datetime.now(timezone.utc)
    optional = {
        name: result.get(name)
        for name in (*AA_COLUMNS, "milp_undecided", "bab_undecided", "lipschitz_constant", "sigma")
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
