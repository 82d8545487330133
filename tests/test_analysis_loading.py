"""analysis.load: filters, epochs, tables, several sweeps, URIs, schema versions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from analysis_helpers import EPOCHS, OBJECTIVES, downgrade_to_v0, write_sweep

from analysis import SchemaVersionError, SweepNotFoundError, load
from trainables.results.schema import PROVENANCE_COLUMNS


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    write_sweep(str(tmp_path / "store"), "a")
    write_sweep(str(tmp_path / "store"), "b", seed=1, n=10)
    return tmp_path / "store"


def test_filters_epochs_and_tables(storage: Path) -> None:
    trials = load(str(storage / "a"))
    assert len(trials) == 24 and set(trials["sweep"]) == {"a"}
    assert set(trials["status"]) == {"completed", "pruned", "failed", "diverged"}
    assert trials.attrs["objectives"] == OBJECTIVES
    assert str(trials["param.model.width"].dtype) == "Int64"
    assert (
        trials["param.method.sabr_lambda"].isna().sum()
        == (trials["param.method.name"] != "sabr").sum()
    )

    done = load(str(storage / "a"), status="completed")
    assert (
        set(done["status"]) == {"completed"} and len(done) == (trials.status == "completed").sum()
    )
    full = load(str(storage / "a"), full_budget=True)
    assert "pruned" not in set(full["status"]) and (full["epochs_run"] == EPOCHS).all()
    some = load(str(storage / "a"), status=["pruned", "failed"])
    assert set(some["status"]) == {"pruned", "failed"}

    kept, epochs = load(str(storage / "a"), status="pruned", epochs=True)
    assert set(epochs["trial_id"]) == set(kept["trial_id"])
    assert (epochs.groupby("trial_id")["epoch"].max() == 1).all()  # pruned after one epoch

    table = load(str(storage / "a"), as_table=True)
    assert isinstance(table, pa.Table) and table.num_rows == 24
    tables = load(str(storage / "a"), epochs=True, as_table=True)
    assert isinstance(tables.trials, pa.Table) and isinstance(tables.epochs, pa.Table)


def test_several_sweeps(storage: Path) -> None:
    both = load(str(storage))  # a storage folder of sweeps
    assert both.groupby("sweep").size().to_dict() == {"a": 24, "b": 10}
    listed = load([str(storage / "a"), str(storage / "b")])
    pd.testing.assert_frame_equal(both, listed)
    trials, epochs = load(str(storage), epochs=True)
    assert set(epochs["sweep"]) == {"a", "b"}
    assert len(epochs) == trials["epochs_run"].sum()


def test_missing_location(tmp_path: Path) -> None:
    with pytest.raises(SweepNotFoundError, match=r"expected .*nothing/trials"):
        load(str(tmp_path / "nothing"))


@pytest.fixture
def memory_root() -> Iterator[str]:
    fsspec = pytest.importorskip("fsspec")
    root = f"/analysis-{uuid.uuid4().hex}"
    yield root
    fsspec.filesystem("memory").rm(root, recursive=True)


def test_fsspec_memory_uri(memory_root: str) -> None:
    """Written through one handle on fsspec's memory filesystem, read back from a URI."""
    from fsspec.implementations.memory import MemoryFileSystem

    fs = pafs.PyFileSystem(pafs.FSSpecHandler(MemoryFileSystem()))
    write_sweep(memory_root, "m", n=6, filesystem=fs, statuses=("completed", "pruned"))
    trials, epochs = load(f"memory:/{memory_root}/m", epochs=True)
    assert len(trials) == 6 and len(epochs) == trials["epochs_run"].sum()
    assert len(load(f"memory:/{memory_root}")) == 6  # the storage folder


def test_schema_v0_is_migrated(storage: Path) -> None:
    current = load(str(storage / "a"))
    downgrade_to_v0(storage / "a")
    old = load(str(storage / "a"))
    assert set(old["schema_version"]) == {0}
    assert "epochs" not in old and set(old["status"]) == set(current["status"])
    added = ["test_verifier", "nan_reason", "device_hours", "code_version", "written_at"]
    added += list(PROVENANCE_COLUMNS)
    assert old[added].isna().all().all()
    same = [c for c in current.columns if c not in [*added, "schema_version"]]
    pd.testing.assert_frame_equal(old[same], current[same])
    assert old["written_at"].dtype == current["written_at"].dtype


def test_mixed_versions_in_one_sweep(storage: Path) -> None:
    current = load(str(storage / "a")).set_index("trial_id")
    downgrade_to_v0(storage / "b")
    (storage / "a" / "trials" / "trial=t000.parquet").unlink()
    (storage / "b" / "trials" / "trial=t000.parquet").rename(
        storage / "a" / "trials" / "trial=t000.parquet"
    )
    mixed = load(str(storage / "a")).set_index("trial_id")
    assert mixed.loc["t000", "schema_version"] == 0
    assert set(mixed.drop(index="t000")["schema_version"]) == {1}
    assert "epochs" not in mixed and mixed["epochs_run"].notna().all()
    assert set(mixed.columns) == set(current.columns)


@pytest.mark.parametrize("metadata", [{b"certsweep.schema_version": b"7"}, {}])
def test_unknown_versions_are_refused(storage: Path, metadata: dict[bytes, bytes]) -> None:
    path = storage / "a" / "trials" / "trial=t003.parquet"
    table = pq.read_table(path)
    kept = {k: v for k, v in table.schema.metadata.items() if b"schema_version" not in k}
    pq.write_table(table.replace_schema_metadata({**kept, **metadata}), path)
    expected = "schema version 7" if metadata else "no certsweep.schema_version metadata"
    with pytest.raises(SchemaVersionError, match=rf"trial=t003.parquet .*{expected}"):
        load(str(storage / "a"))
