"""The Parquet contract of certsweep's results, Ray-free and torch-free.

Everything that writes or reads results goes through here: the sweep driver's Tune callback
(``SweepWriter``), ``analysis`` (``read_sweep``), re-certification (``write_recertified`` /
``read_recertified``) and ``python -m trainables.certify_checkpoint --out``
(``certification``).

- ``schema``: trial and epoch schemas, ``SCHEMA_VERSION``, metadata keys, metric names;
- ``status``: the status vocabulary and ``trial_status``, the one rule that decides it;
- ``migrations``: older schema versions read in the current layout;
- ``storage``: locations (paths, URIs), atomic writes, damaged files set aside;
- ``reading`` / ``writing``: a sweep's rows; ``recertification``, ``certification``: the
  other two kinds of rows.
"""

from trainables.results.migrations import READABLE_VERSIONS, SchemaVersionError
from trainables.results.reading import (
    DamagedFileWarning,
    SweepRows,
    read_epochs,
    read_sweep,
    read_trials,
)
from trainables.results.recertification import read_recertified, write_recertified
from trainables.results.schema import (
    FINAL_VAL_CERT,
    METRIC_COLUMNS,
    PARAM_PREFIX,
    SCHEMA_VERSION,
    is_trial_metric,
    trial_schema,
)
from trainables.results.status import (
    COMPLETED,
    DIVERGED,
    FAILED,
    PRUNED,
    STATUSES,
    full_budget,
    trial_status,
)
from trainables.results.storage import (
    StorageError,
    SweepLocation,
    SweepNotFoundError,
    absolute_storage,
    find_sweeps,
    open_storage,
)
from trainables.results.writing import SweepWriter

__all__ = [
    "COMPLETED",
    "DIVERGED",
    "FAILED",
    "FINAL_VAL_CERT",
    "METRIC_COLUMNS",
    "PARAM_PREFIX",
    "PRUNED",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "DamagedFileWarning",
    "SchemaVersionError",
    "StorageError",
    "SweepLocation",
    "SweepNotFoundError",
    "SweepRows",
    "SweepWriter",
    "absolute_storage",
    "find_sweeps",
    "full_budget",
    "is_trial_metric",
    "open_storage",
    "read_epochs",
    "read_recertified",
    "read_sweep",
    "read_trials",
    "trial_schema",
    "trial_status",
    "write_recertified",
]
