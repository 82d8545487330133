"""Synthetic sweeps for the analysis tests, written by the real ``trainables.results.SweepWriter``.

Objective values lie on a coarse grid (ties and duplicates on purpose); trials end completed,
pruned (fewer epochs), failed (an error file) or diverged; ``method.sabr_lambda`` is active
only for ``method.name == "sabr"``. ``downgrade_to_v0`` rewrites trial files in the documented
pre-release layout (``analysis.loading``'s schema version 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.results import SweepWriter

EPOCHS = 3
OBJECTIVES = ["val_clean_acc", "val_cert_acc"]
#: The parameters' column types, as the sweep driver maps its search space: ``method.name``
#: (categorical), ``optim.lr`` (log float), ``model.width`` (int), and ``method.sabr_lambda``,
#: active only for ``method.name == "sabr"``.
PARAM_TYPES = {
    "method.name": pa.string(),
    "optim.lr": pa.float64(),
    "model.width": pa.int64(),
    "method.sabr_lambda": pa.float64(),
}


#: The evaluation settings every reporting trial records (``PROVENANCE_COLUMNS``).
PROVENANCE = {
    "eval_verifier": "ibp",
    "eval_split": "val",
    "final_verifier": "crown-ibp",
    "final_split": "test",
    "cert_eps": 0.1,
}


def _epoch(epoch: int, clean: float, cert: float) -> dict[str, Any]:
    # the lr and the certified accuracy climb, so learning curves have a shape
    return {
        "epoch": epoch,
        "val_clean_acc": clean * epoch / EPOCHS,
        "val_cert_acc": cert * epoch / EPOCHS,
        "loss": 1.0 / epoch,
        "device_hours": 0.01 * epoch,
    }


def write_sweep(
    storage: str,
    name: str,
    *,
    n: int = 24,
    seed: int = 0,
    filesystem: pafs.FileSystem | None = None,
    statuses: tuple[str, ...] = ("completed", "completed", "completed", "pruned", "failed"),
    checkpoint_uri: str = "/nowhere/checkpoint.pt",
    constant_cert: float | None = None,
    directions: list[str] | None = None,
) -> dict[str, str]:
    """Write ``n`` trials; returns trial id -> status (``diverged`` every 7th trial).

    Completed trials record ``checkpoint_uri`` as their final checkpoint. ``constant_cert``
    gives every trial that certified accuracy (as short sweeps that certify nothing do).
    """
    rng = np.random.default_rng(seed)
    writer = SweepWriter(
        storage,
        name,
        param_types=PARAM_TYPES,
        total_epochs=EPOCHS,
        objectives=OBJECTIVES,
        code_version="test",
        directions=directions,
        filesystem=filesystem,
    )
    written = {}
    for i in range(n):
        method = ["ibp", "cc-ibp", "sabr"][i % 3]
        config: dict[str, Any] = {
            "method.name": method,
            "optim.lr": float(10 ** rng.uniform(-4, -1)),
            "model.width": int(rng.integers(16, 129)),
        }
        if method == "sabr":
            config["method.sabr_lambda"] = float(rng.uniform())
        trial_id = f"t{i:03d}"
        status = "diverged" if i % 7 == 6 else statuses[int(rng.integers(len(statuses)))]
        clean, cert = rng.integers(0, 5, size=2) / 4  # a coarse grid: ties and duplicates
        cert = cert if constant_cert is None else constant_cert
        epochs = 1 if status == "pruned" else EPOCHS
        history = {e: _epoch(e, clean, cert) for e in range(1, epochs + 1)}
        last = dict(history[epochs])
        if status != "failed":  # what produced the certified columns
            last.update(PROVENANCE)
        error = None
        if status == "failed":
            error = f"Traceback ...\nRuntimeError: CUDA out of memory ({i})"
        elif status == "diverged":
            last.update(status="diverged", nan_reason="loss is nan in epoch 3")
        elif status == "completed":
            last.update(
                status="completed",
                test_clean_acc=clean * 0.95,
                test_cert_acc=cert * 0.9,
                test_verifier="crown-ibp",
                checkpoint_uri=checkpoint_uri,
                seed=i,
            )
        written[trial_id] = writer.write(
            trial_id,
            config=config,
            last=last,
            history=history,
            errored=status == "failed",
            error=error,
        )
        assert written[trial_id] == status
    return written


def downgrade_to_v0(sweep_dir: Path) -> None:
    """Rewrite every trial file of a local sweep in the pre-release (v0) layout."""
    dropped = {"test_verifier", "nan_reason", "device_hours", "code_version", "written_at"}
    dropped |= set(PROVENANCE)  # recorded since schema version 1
    for path in sorted((sweep_dir / "trials").glob("*.parquet")):
        table = pq.read_table(path)
        columns = {}
        for name in table.column_names:
            if name in dropped:
                continue
            column = table[name]
            if name == "schema_version":
                column = pa.array([0] * len(table), pa.int32())
            elif name == "status":
                column = pa.array(
                    ["finished" if s == "completed" else s for s in column.to_pylist()]
                )
            columns["epochs" if name == "epochs_run" else name] = column
        metadata = {**table.schema.metadata, b"certsweep.schema_version": b"0"}
        pq.write_table(pa.table(columns).replace_schema_metadata(metadata), path)
