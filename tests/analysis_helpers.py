"""Synthetic sweeps for the analysis tests, written by the real ``sweeps.results.ParquetSink``.

Objective values lie on a coarse grid (ties and duplicates on purpose); trials end completed,
pruned (fewer epochs), failed (an error file) or diverged; ``method.sabr_lambda`` is active
only for ``method.name == "sabr"``. ``downgrade_to_v0`` rewrites trial files in the documented
pre-release layout (``analysis.loading``'s schema version 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from search_spaces import SearchSpace
from sweeps.results import ParquetSink

EPOCHS = 3
OBJECTIVES = ["val_clean_acc", "val_cert_acc"]
SPACE = SearchSpace(
    name="synthetic",
    parameters={
        "method.name": {"type": "categorical", "choices": ["ibp", "cc-ibp", "sabr"]},
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "model.width": {"type": "int", "low": 16, "high": 128},
        "method.sabr_lambda": {
            "type": "float",
            "low": 0.0,
            "high": 1.0,
            "when": {"method.name": "sabr"},
        },
    },
)


@dataclass
class FakeTrial:
    """What the sink's Tune hooks read from ``ray.tune.experiment.Trial``."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None


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
    error_dir: Path | None = None,
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
    options = {"directions": directions, "filesystem": filesystem}
    sink = ParquetSink(storage, name, SPACE, EPOCHS, OBJECTIVES, "test", **options)
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
        trial = FakeTrial(f"t{i:03d}", config)
        status = "diverged" if i % 7 == 6 else statuses[int(rng.integers(len(statuses)))]
        clean, cert = rng.integers(0, 5, size=2) / 4  # a coarse grid: ties and duplicates
        cert = cert if constant_cert is None else constant_cert
        epochs = 1 if status == "pruned" else EPOCHS
        history = [_epoch(e, clean, cert) for e in range(1, epochs + 1)]
        for result in history:
            trial.last_result = result
            sink.on_trial_result(0, [trial], trial, result)
        if status == "failed":
            assert error_dir is not None, "failed trials need an error_dir for their error file"
            error_file = error_dir / f"{trial.trial_id}.txt"
            error_file.write_text(f"Traceback ...\nRuntimeError: CUDA out of memory ({i})")
            trial.error_file = str(error_file)
            sink.on_trial_error(0, [trial], trial)
        else:
            trial.last_result = {**history[-1], "history_json": json.dumps(history)}
            if status == "diverged":
                trial.last_result.update(status="diverged", nan_reason="loss is nan in epoch 3")
            elif status == "completed":
                trial.last_result.update(
                    test_clean_acc=clean * 0.95,
                    test_cert_acc=cert * 0.9,
                    test_verifier="crown-ibp",
                    checkpoint_uri=checkpoint_uri,
                    seed=i,
                )
            sink.on_trial_complete(0, [trial], trial)
        written[trial.trial_id] = status
    return written


def downgrade_to_v0(sweep_dir: Path) -> None:
    """Rewrite every trial file of a local sweep in the pre-release (v0) layout."""
    dropped = {"test_verifier", "nan_reason", "device_hours", "code_version", "written_at"}
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
