"""The sweep's Parquet results: a driver-side Tune callback that writes them, and readers.

Layout under ``<storage>/<sweep>/`` (the contract analysis reads, never Ray's own files):

- ``trials/trial=<trial_id>.parquet``: one row per finished, failed, pruned or diverged
  trial (``trial_schema``): status, error, budget used, typed ``param.<key>`` columns for
  every searched parameter plus the full config as JSON, final metrics, cost, provenance.
- ``epochs/trial=<trial_id>.parquet``: one row per epoch, with every numeric metric the
  trial reported (float64); the loss terms differ between methods, so files of different
  trials may have different columns and the readers unify them.

Each file is written under a hidden temporary name in its directory and then moved into
place, so a reader never sees a partial file (``pyarrow.dataset`` skips names starting with
``.``); a retried trial's new files replace the old ones. ``SCHEMA_VERSION`` is stored as a
column and in the file metadata, so readers can tell layouts apart when it changes.

The callback runs in the single driver process (Tune calls its hooks sequentially), so it
needs no locking. It keeps, per running trial, the epochs reported so far: a failed or
pruned trial's history comes only from them. Tune checkpoints them via ``get_state``, so a
restored driver keeps the epochs reported before the restart.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.result import AUTO_RESULT_KEYS

from search_spaces import FloatParam, IntParam, SearchSpace
from search_spaces.space import AnyParam

SCHEMA_VERSION = 1
PARAM_PREFIX = "param."
ERROR_CHARS = 2000  # the end of a traceback says what went wrong; keep rows small

#: Metric columns every trial row has (float64, null when the trial did not report them).
METRIC_COLUMNS = (
    "val_clean_acc",
    "val_cert_acc",
    "val_pgd_acc",
    "test_clean_acc",
    "test_cert_acc",
    "test_pgd_acc",
)

#: Keys Ray adds to every result: bookkeeping, not metrics of the training run.
RAY_KEYS = frozenset(
    {
        *AUTO_RESULT_KEYS,
        "trial_id",
        "done",
        "experiment_tag",
        "experiment_id",
        "should_checkpoint",
        "timesteps_this_iter",
        "episodes_this_iter",
    }
)
_UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the actor name in its tracebacks


def resolve_storage(
    storage: str, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """The filesystem and base path of ``storage`` (a local path or a pyarrow URI).

    Local paths are made absolute: under ``ray job submit`` the working directory is a
    temporary copy. With ``filesystem`` given, ``storage`` is a path inside it (needed for
    filesystems that cannot be reopened from a URI, e.g. a ``mock://`` one shared with a
    reader).
    """
    if filesystem is not None:
        return filesystem, storage.rstrip("/")
    if "://" not in storage:
        storage = os.path.abspath(os.path.expanduser(storage))
    fs, path = pafs.FileSystem.from_uri(storage)
    return fs, path.rstrip("/")


def param_type(spec: AnyParam) -> pa.DataType:
    """The Arrow type of a parameter column: the Python type of its values.

    Categorical choices keep their type (bool, int64, float64 when ints and floats mix,
    string); only choices of incompatible types fall back to string (non-strings as JSON).
    """
    if isinstance(spec, FloatParam):
        return pa.float64()
    if isinstance(spec, IntParam):
        return pa.int64()
    kinds = {type(choice) for choice in spec.choices if choice is not None}
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    return pa.string()


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


def trial_schema(space: SearchSpace, objectives: Iterable[str] = ()) -> pa.Schema:
    """The explicit schema of a trial row; objectives not among the metrics get a column."""
    fields = [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("sweep", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("epochs_run", pa.int32(), nullable=False),
        pa.field("total_epochs", pa.int32(), nullable=False),
        *(pa.field(PARAM_PREFIX + key, param_type(spec)) for key, spec in space.parameters.items()),
        pa.field("config_json", pa.string(), nullable=False),
        *(pa.field(name, pa.float64()) for name in METRIC_COLUMNS),
    ]
    names = {field.name: field for field in fields}
    for objective in objectives:
        if objective not in names:
            names[objective] = pa.field(objective, pa.float64())
            fields.append(names[objective])
        elif names[objective].type != pa.float64():
            raise ValueError(f"objective {objective!r} clashes with a non-metric column")
    fields += [
        pa.field("test_verifier", pa.string()),
        pa.field("nan_reason", pa.string()),
        pa.field("wall_time_s", pa.float64()),
        pa.field("device_hours", pa.float64()),
        pa.field("checkpoint_uri", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("code_version", pa.string(), nullable=False),
        pa.field("written_at", _UTC_TIMESTAMP, nullable=False),
    ]
    return pa.schema(fields)


def _metadata(kind: str, objectives: list[str], directions: list[str]) -> dict[bytes, bytes]:
    return {
        b"certsweep.schema_version": str(SCHEMA_VERSION).encode(),
        b"certsweep.kind": kind.encode(),
        b"certsweep.objectives": json.dumps(objectives).encode(),
        b"certsweep.directions": json.dumps(directions).encode(),
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, str)


def _number(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """The per-epoch part of a result: numeric metrics and ``nan_reason``, minus Ray's keys."""
    metrics: dict[str, Any] = {}
    for key, value in result.items():
        if key in RAY_KEYS:
            continue
        if _is_number(value) or (key == "nan_reason" and isinstance(value, str)):
            metrics[key] = value
    return metrics


def _error_text(trial: Trial) -> str:
    """The end of Ray's error file (written on the driver before ``on_trial_error``)."""
    path = trial.error_file
    if path and os.path.isfile(path):
        text = _ANSI.sub("", Path(path).read_text(errors="replace")).strip()
    else:
        text = f"trial {trial.trial_id} errored; Ray wrote no error file"
    return text[-ERROR_CHARS:]


class ParquetSink(Callback):
    """Writes each ended trial's row and epoch history as Parquet (see the module docstring).

    ``objectives`` are metric names; each gets a float64 column in the trial rows and is
    listed in the file metadata with its direction (``directions``: "maximize" or
    "minimize" each, default all "maximize"). ``total_epochs`` is the full budget: a trial that ends
    earlier without diverging was stopped by a scheduler and is marked ``pruned``.
    """

    def __init__(
        self,
        storage: str,
        sweep: str,
        space: SearchSpace,
        total_epochs: int,
        objectives: list[str],
        code_version: str,
        *,
        directions: list[str] | None = None,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        self.storage, self.sweep, self.space = storage, sweep, space
        self.total_epochs, self.objectives = total_epochs, list(objectives)
        self.directions = list(directions or ["maximize"] * len(self.objectives))
        self.code_version = code_version
        self._filesystem_arg = filesystem
        self.schema = trial_schema(space, self.objectives).with_metadata(
            _metadata("trials", self.objectives, self.directions)
        )
        self._types = {key: param_type(spec) for key, spec in space.parameters.items()}
        self._seen: dict[str, dict[int, dict[str, Any]]] = {}
        self._open()

    def _open(self) -> None:
        self.filesystem, root = resolve_storage(self.storage, self._filesystem_arg)
        self.sweep_path = f"{root}/{self.sweep}"

    def __getstate__(self) -> dict[str, Any]:
        """Tuner pickles its callbacks into tuner.pkl; some filesystems (mock://) cannot be."""
        state = self.__dict__.copy()
        del state["filesystem"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def get_state(self) -> dict[str, Any]:
        return {"seen": self._seen}

    def set_state(self, state: dict[str, Any]) -> None:
        self._seen = state["seen"]

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        """Remember the epoch; a repeated epoch (a retried trial) replaces it.

        A completed trial's final report repeats its last epoch with the trial-level values
        (test metrics, seed, ``history_json``): it is read in ``on_trial_complete``, not here.
        """
        epoch = result.get("epoch", result.get("training_iteration"))
        if _is_number(epoch) and "history_json" not in result:
            self._seen.setdefault(trial.trial_id, {})[int(epoch)] = epoch_metrics(result)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        last = trial.last_result or {}
        history = self._history(trial.trial_id, last)
        epochs_run = max(history, default=0)
        if last.get("status") == "diverged":
            status = "diverged"
        elif epochs_run < self.total_epochs:
            status = "pruned"
        else:
            status = "completed"
        self.write(trial, status, None, history)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        last = trial.last_result or {}
        self.write(trial, "failed", _error_text(trial), self._history(trial.trial_id, last))

    def _history(self, trial_id: str, last: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
        """Epoch -> metrics: the trainable's ``history_json`` when present (complete across
        restores), topped up with what only the reports carried (device_hours, ...);
        otherwise the reports seen."""
        seen = self._seen.get(trial_id, {})
        if not isinstance(last.get("history_json"), str):
            return dict(sorted(seen.items()))
        history = {}
        for i, entry in enumerate(json.loads(last["history_json"]), start=1):
            epoch = int(entry.get("epoch", i))
            history[epoch] = {**seen.get(epoch, {}), **epoch_metrics(entry)}
        return dict(sorted(history.items()))

    def write(
        self,
        trial: Trial,
        status: str,
        error: str | None,
        history: Mapping[int, Mapping[str, Any]],
    ) -> None:
        """Write the trial's epochs, then its row (replacing earlier files), then forget it.

        The row goes last: a reader that sees a trial row also sees that trial's epochs.
        """
        self._write_atomic("epochs", trial.trial_id, self._epochs_table(trial.trial_id, history))
        row = self._trial_table(trial, status, error, max(history, default=0))
        self._write_atomic("trials", trial.trial_id, row)
        self._seen.pop(trial.trial_id, None)

    def _trial_table(
        self, trial: Trial, status: str, error: str | None, epochs_run: int
    ) -> pa.Table:
        config, last = trial.config, trial.last_result or {}
        row: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "sweep": self.sweep,
            "trial_id": trial.trial_id,
            "status": status,
            "error": error,
            "epochs_run": epochs_run,
            "total_epochs": self.total_epochs,
            "config_json": json.dumps(config, sort_keys=True, default=str),
            "test_verifier": _text(last.get("test_verifier")),
            "nan_reason": _text(last.get("nan_reason")),
            "wall_time_s": _number(last.get("wall_time_s", last.get("time_total_s"))),
            "device_hours": _number(last.get("device_hours")),
            "checkpoint_uri": _text(last.get("checkpoint_uri")),
            "seed": int(last["seed"]) if _is_number(last.get("seed")) else None,
            "code_version": self.code_version,
            "written_at": datetime.now(timezone.utc),
        }
        for key, arrow_type in self._types.items():
            row[PARAM_PREFIX + key] = _param_value(config.get(key), arrow_type)
        for field in self.schema:
            if field.name not in row:  # the metric columns
                row[field.name] = _number(last.get(field.name))
        return pa.Table.from_pylist([row], schema=self.schema)

    def _epochs_table(self, trial_id: str, history: Mapping[int, Mapping[str, Any]]) -> pa.Table:
        names = dict.fromkeys(key for metrics in history.values() for key in metrics)
        fields = [
            pa.field("sweep", pa.string(), nullable=False),
            pa.field("trial_id", pa.string(), nullable=False),
            pa.field("epoch", pa.int32(), nullable=False),
            *(
                pa.field(name, pa.string() if name == "nan_reason" else pa.float64())
                for name in names
                if name not in {"sweep", "trial_id", "epoch"}
            ),
        ]
        schema = pa.schema(fields, metadata=_metadata("epochs", self.objectives, self.directions))
        rows = [
            {**metrics, "sweep": self.sweep, "trial_id": trial_id, "epoch": epoch}
            for epoch, metrics in history.items()
        ]
        return pa.Table.from_pylist(rows, schema=schema)

    def _write_atomic(self, kind: str, trial_id: str, table: pa.Table) -> None:
        write_atomic(
            self.filesystem, f"{self.sweep_path}/{kind}", f"trial={trial_id}.parquet", table
        )


def write_atomic(filesystem: pafs.FileSystem, directory: str, name: str, table: pa.Table) -> None:
    """Write ``table`` as ``directory/name`` under a hidden temporary name, then move it into
    place (replacing), so readers never see a partial file. Also used by the analysis to
    write re-certification results next to a sweep."""
    temporary = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
    filesystem.create_dir(directory, recursive=True)
    try:
        pq.write_table(table, temporary, filesystem=filesystem)
        filesystem.move(temporary, f"{directory}/{name}")
    except BaseException:
        if filesystem.get_file_info(temporary).type != pafs.FileType.NotFound:
            filesystem.delete_file(temporary)
        raise


def _read(
    storage: str,
    sweep: str,
    kind: str,
    filesystem: pafs.FileSystem | None,
    columns: list[str] | None = None,
) -> pa.Table | None:
    """All files of one kind as one table over the union of their schemas (None if none)."""
    fs, root = resolve_storage(storage, filesystem)
    directory = f"{root}/{sweep}/{kind}"
    if fs.get_file_info(directory).type == pafs.FileType.NotFound:
        return None
    dataset = ds.dataset(directory, filesystem=fs, format="parquet")
    fragments = list(dataset.get_fragments())
    if not fragments:
        return None
    schema = pa.unify_schemas(
        [fragment.physical_schema for fragment in fragments], promote_options="permissive"
    )
    unified = ds.dataset(dataset.files, schema=schema, filesystem=fs, format="parquet")
    return unified.to_table(columns=columns)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Integers and booleans as pandas' nullable dtypes, so a parameter column with inactive
    (null) entries keeps its type instead of turning into float or object."""
    nullable = {
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    return table.to_pandas(types_mapper=nullable.get)


def read_trials(
    storage: str, sweep: str, *, filesystem: pafs.FileSystem | None = None
) -> pd.DataFrame:
    """One row per written trial, ordered by trial id (empty frame when none yet)."""
    table = _read(storage, sweep, "trials", filesystem)
    if table is None:
        return _to_pandas(trial_schema(SearchSpace(parameters={})).empty_table())
    return _to_pandas(table.sort_by("trial_id"))


def read_epochs(
    storage: str, sweep: str, *, filesystem: pafs.FileSystem | None = None
) -> pd.DataFrame:
    """One row per trial and epoch, ordered; a metric a trial never reported is NaN."""
    table = _read(storage, sweep, "epochs", filesystem)
    if table is None:
        return pd.DataFrame({"sweep": [], "trial_id": [], "epoch": pd.array([], "Int32")})
    return _to_pandas(table.sort_by([("trial_id", "ascending"), ("epoch", "ascending")]))


def completed_trial_ids(
    storage: str, sweep: str, *, filesystem: pafs.FileSystem | None = None
) -> set[str]:
    """Ids of trials written with status ``completed`` (failed ones are retried on resume)."""
    table = _read(storage, sweep, "trials", filesystem, columns=["trial_id", "status"])
    if table is None:
        return set()
    return {
        trial_id
        for trial_id, status in zip(
            table["trial_id"].to_pylist(), table["status"].to_pylist(), strict=True
        )
        if status == "completed"
    }
