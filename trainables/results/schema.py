"""The Parquet schemas of a sweep's files, their version and their metadata keys.

A sweep's trial rows (``trial_schema``) hold the bookkeeping columns, one typed
``param.<key>`` column per searched parameter (the caller maps each parameter to its Arrow
type: this module knows nothing of search spaces), the full config as JSON, the metric
columns and the provenance. Epoch rows (``epochs_schema``) hold every numeric metric a trial
reported (float64), so files of trials with different loss terms have different columns.

Every file records ``SCHEMA_VERSION`` in its metadata (``VERSION_KEY``) and what it holds
(``KIND_KEY``); trial and epoch files also name the objectives and their directions. Bump
the version when a column changes meaning, is renamed or removed, and add a migration in
``trainables.results.migrations``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa

SCHEMA_VERSION = 1
PARAM_PREFIX = "param."

VERSION_KEY = b"certsweep.schema_version"
KIND_KEY = b"certsweep.kind"
OBJECTIVES_KEY = b"certsweep.objectives"
DIRECTIONS_KEY = b"certsweep.directions"  # written since the sink records modes (still v1)

TRIALS, EPOCHS = "trials", "epochs"  # the kinds (and folder names) of a sweep's own files

#: Metric columns every trial row has (float64, null when the trial did not report them).
METRIC_COLUMNS = (
    "val_clean_acc",
    "val_cert_acc",
    "val_pgd_acc",
    "test_clean_acc",
    "test_cert_acc",
    "test_pgd_acc",
    "val_final_cert_acc",
)
#: The final verifier's certificate of the validation samples the epochs evaluate, measured
#: once at the end of a trial that ran its full budget: what a sweep tunes on by default.
FINAL_VAL_CERT = "val_final_cert_acc"
#: What produced the certified columns (the trial's evaluation settings): per epoch,
#: ``<eval_split>_cert_acc`` by ``eval_verifier``; at the end, ``<final_split>_cert_acc`` by
#: ``final_verifier`` (also in ``test_verifier`` when the final split is test), and
#: ``val_final_cert_acc`` by ``final_verifier`` on the validation split; all at the L-inf
#: radius ``cert_eps``. Null in rows written before they were recorded (and in rows of
#: trials that failed before their first report).
PROVENANCE_COLUMNS = {
    "eval_verifier": pa.string(),
    "eval_split": pa.string(),
    "final_verifier": pa.string(),
    "final_split": pa.string(),
    "cert_eps": pa.float64(),
}
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Names of the metrics a trial can report (``is_trial_metric``): the evaluation's
#: ``<split>_<metric>``, the final verifier's certificate of the validation split and its
#: counters (``val_final_<metric>``), the training loop's epoch metrics and loss terms, and
#: the costs.
_EVALUATION = (
    r"(clean|cert|pgd|autoattack|aa_\w+)_acc|cert_by_\w+|lipschitz_constant|(milp|bab)_undecided|n"
)
_FINAL_VAL = r"cert_acc|cert_by_\w+|lipschitz_constant|(milp|bab)_undecided|n"
_TRIAL_METRIC = re.compile(
    rf"(val|test)_({_EVALUATION})|val_final_({_FINAL_VAL})|teacher_val_(clean|pgd)_acc|train_clean_acc"
    r"|loss|loss_\w+|ibp_loss|adv_loss|kappa|eps|lr|seconds|examples_per_second"
    r"|teacher_seconds|device_hours|wall_time_s"
)


def is_trial_metric(name: str) -> bool:
    """Whether a trial can report ``name`` (what objectives and constraints may name)."""
    return _TRIAL_METRIC.fullmatch(name) is not None


def file_metadata(
    kind: str, objectives: Sequence[str] = (), directions: Sequence[str] = ()
) -> dict[bytes, bytes]:
    """The key-value metadata of one results file (objectives only for a sweep's files)."""
    metadata = {VERSION_KEY: str(SCHEMA_VERSION).encode(), KIND_KEY: kind.encode()}
    if kind in (TRIALS, EPOCHS):
        metadata[OBJECTIVES_KEY] = json.dumps(list(objectives)).encode()
        metadata[DIRECTIONS_KEY] = json.dumps(list(directions)).encode()
    return metadata


def trial_schema(
    param_types: Mapping[str, pa.DataType], objectives: Iterable[str] = ()
) -> pa.Schema:
    """The explicit schema of a trial row; objectives not among the metrics get a column."""
    fields = [
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("sweep", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("epochs_run", pa.int32(), nullable=False),
        pa.field("total_epochs", pa.int32(), nullable=False),
        *(pa.field(PARAM_PREFIX + key, kind) for key, kind in param_types.items()),
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
        *(pa.field(name, kind) for name, kind in PROVENANCE_COLUMNS.items()),
        pa.field("nan_reason", pa.string()),
        pa.field("wall_time_s", pa.float64()),
        pa.field("device_hours", pa.float64()),
        pa.field("checkpoint_uri", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("code_version", pa.string(), nullable=False),
        pa.field("written_at", UTC_TIMESTAMP, nullable=False),
    ]
    return pa.schema(fields)


def epochs_schema(metrics: Iterable[str]) -> pa.Schema:
    """The schema of a trial's epoch rows: its metric names as float64 (``nan_reason`` text)."""
    keys = {"sweep", "trial_id", "epoch"}
    return pa.schema(
        [
            pa.field("sweep", pa.string(), nullable=False),
            pa.field("trial_id", pa.string(), nullable=False),
            pa.field("epoch", pa.int32(), nullable=False),
            *(
                pa.field(name, pa.string() if name == "nan_reason" else pa.float64())
                for name in dict.fromkeys(metrics)
                if name not in keys
            ),
        ]
    )
