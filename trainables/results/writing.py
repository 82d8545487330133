"""Writing a sweep's trial rows and epoch rows (the Tune callback in ``sweeps`` calls this).

``SweepWriter.write`` takes what a trial left behind, in plain Python: its id, its config,
its last report, its epoch history (epoch -> metrics) and whether it raised; it decides the
status (``trainables.results.status.trial_status``) and writes the trial's epochs, then its
row, each atomically, replacing earlier files of the same trial (a retried trial).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from trainables.results.schema import (
    EPOCHS,
    PARAM_PREFIX,
    PROVENANCE_COLUMNS,
    SCHEMA_VERSION,
    TRIALS,
    epochs_schema,
    file_metadata,
    trial_schema,
)
from trainables.results.status import trial_status
from trainables.results.storage import open_storage, write_atomic

ERROR_CHARS = 2000  # the end of a traceback says what went wrong; keep rows small


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool | str)


def _number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _param_value(value: Any, arrow_type: pa.DataType) -> Any:
    """A config value converted for its column; absent (inactive) and NaN become null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if pa.types.is_string(arrow_type):
        return value if isinstance(value, str) else json.dumps(value)
    if pa.types.is_boolean(arrow_type):
        return bool(value)
    if pa.types.is_integer(arrow_type):
        return int(value)
    return float(value)


class SweepWriter:
    """Writes the trial and epoch files of one sweep under ``<storage>/<sweep>/``.

    ``param_types``: searched parameter -> Arrow type of its ``param.<key>`` column;
    ``objectives``: metric names, each a float64 column, listed in the files' metadata with
    its direction (``directions``: "maximize" or "minimize" each, default all "maximize");
    ``total_epochs``: the full budget (a trial that ends earlier was pruned).
    ``filesystem``: ``storage`` is a path inside it (e.g. a shared ``mock://`` filesystem).
    """

    def __init__(
        self,
        storage: str,
        sweep: str,
        *,
        param_types: Mapping[str, pa.DataType],
        total_epochs: int,
        objectives: Sequence[str],
        code_version: str,
        directions: Sequence[str] | None = None,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        self.sweep, self.total_epochs = sweep, total_epochs
        self.param_types = dict(param_types)
        self.objectives = list(objectives)
        self.directions = list(directions or ["maximize"] * len(self.objectives))
        self.code_version = code_version
        self.storage = storage
        self.filesystem, root = open_storage(storage, filesystem)
        self.sweep_path = f"{root}/{sweep}"
        self.schema = trial_schema(self.param_types, self.objectives).with_metadata(
            file_metadata(TRIALS, self.objectives, self.directions)
        )

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks (into files it alone reads); some filesystems cannot be
        pickled, so the filesystem is reopened from ``storage`` on unpickling."""
        state = self.__dict__.copy()
        del state["filesystem"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.filesystem, _ = open_storage(self.storage)

    def write(
        self,
        trial_id: str,
        *,
        config: Mapping[str, Any],
        last: Mapping[str, Any],
        history: Mapping[int, Mapping[str, Any]],
        errored: bool = False,
        error: str | None = None,
    ) -> str:
        """Write the trial's epochs, then its row; returns its status.

        The row goes last: a reader that sees a trial row also sees that trial's epochs.
        ``last`` is the trial's last report (the trainable's final one when it finished);
        a ``failed`` report carries its own ``error``.
        """
        epochs_run = max(history, default=0)
        status = trial_status(
            errored=errored,
            reported=last.get("status"),
            epochs_run=epochs_run,
            total_epochs=self.total_epochs,
        )
        if error is None and status == "failed":
            error = _text(last.get("error"))
        self._write(EPOCHS, trial_id, self._epochs_table(trial_id, history))
        row = self._trial_table(trial_id, config, last, status, error, epochs_run)
        self._write(TRIALS, trial_id, row)
        return status

    def _trial_table(
        self,
        trial_id: str,
        config: Mapping[str, Any],
        last: Mapping[str, Any],
        status: str,
        error: str | None,
        epochs_run: int,
    ) -> pa.Table:
        row: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "sweep": self.sweep,
            "trial_id": trial_id,
            "status": status,
            "error": None if error is None else error[-ERROR_CHARS:],
            "epochs_run": epochs_run,
            "total_epochs": self.total_epochs,
            "config_json": json.dumps(dict(config), sort_keys=True, default=str),
            "test_verifier": _text(last.get("test_verifier")),
            **{
                name: _number(last.get(name)) if kind == pa.float64() else _text(last.get(name))
                for name, kind in PROVENANCE_COLUMNS.items()
            },
            "nan_reason": _text(last.get("nan_reason")),
            "wall_time_s": _number(last.get("wall_time_s")),
            "device_hours": _number(last.get("device_hours")),
            "checkpoint_uri": _text(last.get("checkpoint_uri")),
            "seed": int(last["seed"]) if is_number(last.get("seed")) else None,
            "code_version": self.code_version,
            "written_at": datetime.now(timezone.utc),
        }
        for key, arrow_type in self.param_types.items():
            row[PARAM_PREFIX + key] = _param_value(config.get(key), arrow_type)
        for field in self.schema:
            if field.name not in row:  # the metric columns
                row[field.name] = _number(last.get(field.name))
        return pa.Table.from_pylist([row], schema=self.schema)

    def _epochs_table(self, trial_id: str, history: Mapping[int, Mapping[str, Any]]) -> pa.Table:
        names = [key for metrics in history.values() for key in metrics]
        schema = epochs_schema(names).with_metadata(
            file_metadata(EPOCHS, self.objectives, self.directions)
        )
        rows = [
            {**metrics, "sweep": self.sweep, "trial_id": trial_id, "epoch": epoch}
            for epoch, metrics in sorted(history.items())
        ]
        return pa.Table.from_pylist(rows, schema=schema)

    def _write(self, kind: str, trial_id: str, table: pa.Table) -> None:
        write_atomic(
            self.filesystem, f"{self.sweep_path}/{kind}", f"trial={trial_id}.parquet", table
        )
