"""Reading older trial rows in the current layout.

Readable schema versions:

- 1: the current layout (``trainables.results.schema.trial_schema``).
- 0: the pre-release layout, read through a migration: the epochs run were called
  ``epochs`` (now ``epochs_run``), a full-budget trial's status was ``finished`` (now
  ``completed``), and there were no ``test_verifier``, ``nan_reason``, ``device_hours``,
  ``code_version`` or ``written_at`` columns, nor the certificates' provenance
  (``schema.PROVENANCE_COLUMNS``, added to version 1 later): they read as null. Epoch files
  did not change.

Any other version, or a file without the version key, is refused (``SchemaVersionError``).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from trainables.results.status import COMPLETED


class SchemaVersionError(ValueError):
    """A results file has a schema version this code cannot read (or none)."""


#: Columns v0 lacked, with the dtypes the current reader gives them.
_ADDED_IN_V1 = {
    "test_verifier": "str",
    "nan_reason": "str",
    "device_hours": "float64",
    "code_version": "str",
    "written_at": "datetime64[us, UTC]",
    "eval_verifier": "str",
    "eval_split": "str",
    "final_verifier": "str",
    "final_split": "str",
    "cert_eps": "float64",
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
    rows["status"] = rows["status"].replace({"finished": COMPLETED})
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


def migrate_trials(trials: pd.DataFrame) -> pd.DataFrame:
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
