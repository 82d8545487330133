"""The sweep's Parquet results: statuses, typed columns, atomic writes, readers, filesystems.

The results contract is ``trainables.results``; the sweep's Tune callback
(``sweeps.sink.ParquetSink``) feeds it. Its hooks are driven with stand-in trials carrying
the attributes the sink reads from ``ray.tune.experiment.Trial`` (``trial_id``, ``config``,
``last_result``, ``error_file``); one test runs the sink inside a real ``tune.Tuner``.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from search_spaces import SearchSpace
from sweeps.sink import ParquetSink, param_types
from trainables.results import SCHEMA_VERSION, SweepWriter, read_epochs, read_trials, storage
from trainables.results.writing import ERROR_CHARS

SWEEP = "demo"
EPOCHS = 3
SPACE = SearchSpace(
    name="test",
    parameters={
        "method": {"type": "categorical", "choices": ["ibp", "sabr"]},
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "data.batch_size": {"type": "int", "low": 16, "high": 256},
        "model.bn": {"type": "categorical", "choices": [True, False]},
        "model.width": {"type": "categorical", "choices": [64, 128]},
        "loss.mix": {"type": "categorical", "choices": [0, 0.5, None]},
        "loss.odd": {"type": "categorical", "choices": [1, "a"]},
        "loss.sabr_lambda": {
            "type": "float",
            "low": 0.0,
            "high": 1.0,
            "when": {"method": "sabr"},
        },
        "loss.never": {"type": "int", "low": 1, "high": 4, "when": {"method": "crown"}},
    },
)
CONFIG = {
    "method": "ibp",
    "optim.lr": 0.01,
    "data.batch_size": 64,
    "model.bn": False,
    "model.width": 128,
    "loss.mix": 0,
    "loss.odd": 1,
}


@dataclass
class FakeTrial:
    """What Tune's callback hooks read from a ``ray.tune.experiment.Trial``."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=lambda: dict(CONFIG))
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None


def epoch_result(epoch: int, **extra: Any) -> dict[str, Any]:
    """One epoch's report as the trainable sends it, plus some of Ray's own keys."""
    return {
        "epoch": epoch,
        "eps": 0.01 * epoch,
        "lr": 0.1,
        "loss": 1.0 / epoch,
        "loss_ibp": 0.5 / epoch,
        "train_clean_acc": 0.5,
        "val_clean_acc": 0.6,
        "val_cert_acc": 0.1 * epoch,
        "val_pgd_acc": 0.4,
        "seconds": 2.0,
        "examples_per_second": 100.0,
        "device_hours": 0.001 * epoch,
        "status": "running",
        "trial_id": "ignored",
        "training_iteration": epoch,
        "time_total_s": 7.5,
        "pid": 123,
        "done": False,
        "config": {"ignored": True},
        **extra,
    }


def final_result(epochs: int, history: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The last report of a trial that ran to its end (``trainables.tune``)."""
    final = {
        "status": "completed",
        "test_clean_acc": 0.55,
        "test_cert_acc": 0.25,
        "test_pgd_acc": 0.35,
        "test_verifier": "crown",
        "checkpoint_uri": "s3://bucket/ckpt",
        "seed": 7,
        "wall_time_s": 42.0,
        "history_json": json.dumps(history),
    }
    return epoch_result(epochs, **{**final, **extra})


def report(sink: ParquetSink, trial: FakeTrial, result: dict[str, Any]) -> None:
    trial.last_result = result
    sink.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)


def run(sink: ParquetSink, trial: FakeTrial, epochs: int, **extra: Any) -> None:
    for epoch in range(1, epochs + 1):
        report(sink, trial, epoch_result(epoch, **extra))


def complete(sink: ParquetSink, trial: FakeTrial) -> None:
    sink.on_trial_complete(iteration=0, trials=[trial], trial=trial)


def make_writer(where: str, **kwargs: Any) -> SweepWriter:
    return SweepWriter(
        where,
        SWEEP,
        param_types=param_types(SPACE),
        total_epochs=EPOCHS,
        objectives=["val_cert_acc", "score"],
        code_version="v1",
        **kwargs,
    )


def make_sink(where: str, **kwargs: Any) -> ParquetSink:
    return ParquetSink(make_writer(where, **kwargs))


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "results")


def by_id(where: str) -> dict[str, dict[str, Any]]:
    return {row["trial_id"]: row for row in read_trials(where, SWEEP).to_dict("records")}


def completed_ids(where: str, **kwargs: Any) -> set[str]:
    rows = read_trials(where, SWEEP, **kwargs)
    return set(rows.loc[rows["status"] == "completed", "trial_id"])


def test_statuses_metrics_and_errors(store: str, tmp_path: Path) -> None:
    sink = make_sink(store)
    done = FakeTrial("t_done")
    run(sink, done, EPOCHS)
    history = [epoch_result(e) for e in range(1, EPOCHS + 1)]
    report(sink, done, final_result(EPOCHS, history, nan_reason="val_pgd_acc=nan replaced"))
    complete(sink, done)

    diverged = FakeTrial("t_div")
    run(sink, diverged, 1)
    report(sink, diverged, final_result(1, history[:1], status="diverged"))
    complete(sink, diverged)

    pruned = FakeTrial("t_pruned")
    run(sink, pruned, 2)
    complete(sink, pruned)

    failed = FakeTrial("t_failed", error_file=str(tmp_path / "error.txt"))
    traceback = "\x1b[36mray::ImplicitFunc.train()\x1b[39m\n" + "x" * 3000 + "\nValueError: boom"
    Path(failed.error_file).write_text(traceback)
    run(sink, failed, 2)
    sink.on_trial_error(iteration=0, trials=[failed], trial=failed)

    no_file = FakeTrial("t_nofile")
    sink.on_trial_error(iteration=0, trials=[no_file], trial=no_file)

    rows = by_id(store)
    assert {tid: row["status"] for tid, row in rows.items()} == {
        "t_done": "completed",
        "t_div": "diverged",
        "t_pruned": "pruned",
        "t_failed": "failed",
        "t_nofile": "failed",
    }
    row = rows["t_done"]
    assert pd.isna(row["error"])
    assert (row["epochs_run"], row["total_epochs"]) == (3, EPOCHS)
    assert (row["test_clean_acc"], row["test_cert_acc"], row["test_pgd_acc"]) == (0.55, 0.25, 0.35)
    assert row["val_cert_acc"] == pytest.approx(0.3)
    assert (row["test_verifier"], row["seed"]) == ("crown", 7)
    assert (row["wall_time_s"], row["device_hours"]) == (42.0, 0.003)
    assert row["checkpoint_uri"] == "s3://bucket/ckpt"
    assert row["nan_reason"] == "val_pgd_acc=nan replaced"
    assert (row["schema_version"], row["code_version"], row["sweep"]) == (
        SCHEMA_VERSION,
        "v1",
        SWEEP,
    )
    assert str(row["written_at"].tz) == "UTC"
    assert json.loads(row["config_json"]) == CONFIG
    assert math.isnan(row["score"])  # an objective column even when never reported
    assert rows["t_div"]["epochs_run"] == 1
    assert rows["t_pruned"]["epochs_run"] == 2
    assert rows["t_pruned"]["wall_time_s"] == 7.5  # Ray's time_total_s as the fallback
    assert math.isnan(rows["t_pruned"]["test_cert_acc"])
    error = rows["t_failed"]["error"]
    assert len(error) == ERROR_CHARS
    assert error.endswith("ValueError: boom")
    assert "\x1b" not in rows["t_failed"]["error"]
    assert rows["t_failed"]["epochs_run"] == 2
    assert "no error file" in rows["t_nofile"]["error"]
    assert rows["t_nofile"]["epochs_run"] == 0
    assert completed_ids(store) == {"t_done"}

    epochs = read_epochs(store, SWEEP)
    assert epochs.groupby("trial_id").size().to_dict() == {
        "t_div": 1,
        "t_done": 3,
        "t_failed": 2,
        "t_pruned": 2,
    }  # t_nofile's epochs file has no rows
    assert not {"training_iteration", "pid", "done", "status", "seed"} & set(epochs)
    assert not any(column.startswith("test_") for column in epochs)
    last = epochs[(epochs.trial_id == "t_done") & (epochs.epoch == 3)].iloc[0]
    assert (last["val_cert_acc"], last["device_hours"]) == (pytest.approx(0.3), 0.003)


def test_parameter_columns_are_typed(store: str) -> None:
    sink = make_sink(store)
    sabr = FakeTrial("t_sabr", config={**CONFIG, "method": "sabr", "loss.sabr_lambda": 0.3})
    for trial in (FakeTrial("t_ibp"), sabr):
        run(sink, trial, 2)
        complete(sink, trial)
    schema = pq.read_schema(f"{store}/{SWEEP}/trials/trial=t_ibp.parquet")
    assert {name: schema.field(name).type for name in schema.names if "." in name} == {
        "param.method": pa.string(),
        "param.optim.lr": pa.float64(),
        "param.data.batch_size": pa.int64(),
        "param.model.bn": pa.bool_(),
        "param.model.width": pa.int64(),
        "param.loss.mix": pa.float64(),
        "param.loss.odd": pa.string(),
        "param.loss.sabr_lambda": pa.float64(),
        "param.loss.never": pa.int64(),
    }
    assert schema.metadata[b"certsweep.schema_version"] == str(SCHEMA_VERSION).encode()
    assert json.loads(schema.metadata[b"certsweep.objectives"]) == ["val_cert_acc", "score"]
    assert schema.field("error").type == pa.string()  # null in every row, still typed
    assert schema.field("seed").type == pa.int64()

    frame = read_trials(store, SWEEP).set_index("trial_id")
    assert str(frame["param.data.batch_size"].dtype) == "Int64"
    assert str(frame["param.model.bn"].dtype) == "boolean"
    assert str(frame["param.loss.never"].dtype) == "Int64"
    assert frame["param.loss.never"].isna().all()
    assert frame["param.model.bn"].tolist() == [False, False]
    assert frame.loc["t_ibp", "param.model.width"] == 128
    assert frame.loc["t_ibp", "param.loss.mix"] == 0.0
    assert frame.loc["t_ibp", "param.loss.odd"] == "1"  # mixed choices: JSON text
    assert math.isnan(frame.loc["t_ibp", "param.loss.sabr_lambda"])  # inactive: null
    assert frame.loc["t_sabr", "param.loss.sabr_lambda"] == 0.3


def test_history_json_is_preferred_over_seen_results(store: str) -> None:
    """A trial resumed from its epoch-2 checkpoint reports only epoch 3 to this driver."""
    sink = make_sink(store)
    trial = FakeTrial("t_resumed")
    report(sink, trial, epoch_result(3, loss=99.0))
    history = [{"epoch": e, "loss": 10.0 + e, "loss_ibp": 1.0} for e in range(1, 4)]
    report(sink, trial, final_result(3, history))
    complete(sink, trial)
    epochs = read_epochs(store, SWEEP)
    assert epochs["epoch"].tolist() == [1, 2, 3]
    assert epochs["loss"].tolist() == [11.0, 12.0, 13.0]
    # what only the reports carried is kept for the epochs they covered
    assert epochs["device_hours"].isna().tolist() == [True, True, False]
    assert by_id(store)["t_resumed"]["status"] == "completed"


def test_writes_are_atomic_and_a_retry_replaces(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = make_sink(store)
    trial = FakeTrial("t_retry")
    run(sink, trial, 2)
    sink.on_trial_error(iteration=0, trials=[trial], trial=trial)
    trials_dir = Path(store, SWEEP, "trials")
    epochs_dir = Path(store, SWEEP, "epochs")
    before = {d.name: (d / "trial=t_retry.parquet").read_bytes() for d in (trials_dir, epochs_dir)}

    def broken_write(table: pa.Table, where: str, filesystem: pafs.FileSystem) -> None:
        with filesystem.open_output_stream(where) as stream:
            stream.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage.pq, "write_table", broken_write)
    run(sink, trial, EPOCHS)
    with pytest.raises(OSError, match="disk full"):
        complete(sink, trial)
    for directory in (trials_dir, epochs_dir):  # no temporary file left, the old one intact
        assert [p.name for p in directory.iterdir()] == ["trial=t_retry.parquet"]
        assert (directory / "trial=t_retry.parquet").read_bytes() == before[directory.name]
    monkeypatch.undo()

    complete(sink, trial)  # the retried trial now finishes: its files are replaced
    assert sorted(p.name for p in trials_dir.iterdir()) == ["trial=t_retry.parquet"]
    assert sorted(p.name for p in epochs_dir.iterdir()) == ["trial=t_retry.parquet"]
    row = by_id(store)["t_retry"]
    assert (row["status"], row["epochs_run"]) == ("completed", 3)
    assert pd.isna(row["error"])
    assert read_epochs(store, SWEEP)["epoch"].tolist() == [1, 2, 3]


def test_epoch_files_with_different_loss_terms_read_together(store: str) -> None:
    sink = make_sink(store)
    ibp, kd = FakeTrial("t_a"), FakeTrial("t_b")
    run(sink, ibp, 2)
    for epoch in (1, 2):
        result = epoch_result(epoch, loss_kd=0.2)
        del result["loss_ibp"], result["val_cert_acc"]
        report(sink, kd, result)
    for trial in (ibp, kd):
        complete(sink, trial)
    epochs = read_epochs(store, SWEEP)
    assert len(epochs) == 4
    assert epochs.groupby("trial_id")["loss_ibp"].count().to_dict() == {"t_a": 2, "t_b": 0}
    assert epochs.groupby("trial_id")["loss_kd"].count().to_dict() == {"t_a": 0, "t_b": 2}
    assert str(epochs["epoch"].dtype) == "Int32"


@pytest.mark.parametrize("kind", ["relative", "file", "mock"])
def test_storage_locations(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    where = {"relative": "out", "file": f"file://{tmp_path}/out", "mock": "mock:///out"}[kind]
    sink = make_sink(where)
    trial = FakeTrial("t_1")
    run(sink, trial, EPOCHS)
    complete(sink, trial)
    # a reader needs the same mock filesystem object: a new mock:// URI is a new, empty one
    writer = sink.writer
    shared = {"filesystem": writer.filesystem} if kind == "mock" else {}
    read_from = "out" if kind == "mock" else where
    assert completed_ids(read_from, **shared) == {"t_1"}
    assert len(read_epochs(read_from, SWEEP, **shared)) == EPOCHS
    if kind != "mock":
        assert (tmp_path / "out" / SWEEP / "trials" / "trial=t_1.parquet").is_file()
    selector = pafs.FileSelector(writer.sweep_path, recursive=True)
    names = [info.path for info in writer.filesystem.get_file_info(selector)]
    assert not [name for name in names if name.endswith(".tmp")]


def test_reading_an_empty_sweep(store: str) -> None:
    assert read_trials(store, SWEEP).empty
    assert "status" in read_trials(store, SWEEP)
    assert read_epochs(store, SWEEP).empty
    assert completed_ids(store) == set()


def test_the_sink_pickles() -> None:
    """Tuner pickles its callbacks (tuner.pkl); a mock filesystem cannot be pickled."""
    sink = make_sink("mock:///out")
    trial = FakeTrial("t_1")
    run(sink, trial, 2)
    restored = pickle.loads(pickle.dumps(sink))
    report(restored, trial, epoch_result(3))
    complete(restored, trial)
    epochs = read_epochs("out", SWEEP, filesystem=restored.writer.filesystem)
    assert epochs["epoch"].tolist() == [1, 2, 3]


def test_an_objective_may_not_replace_a_bookkeeping_column() -> None:
    with pytest.raises(ValueError, match="epochs_run"):
        SweepWriter(
            "out",
            SWEEP,
            param_types={},
            total_epochs=EPOCHS,
            objectives=["epochs_run"],
            code_version="v1",
        )


def test_only_own_files_are_read_and_a_damaged_one_is_set_aside(store: str) -> None:
    """A truncated row (a crash, a full disk) or a stray file blocks neither reading nor
    resuming: the stray file is ignored, the damaged one reported and, for the driver,
    renamed out of the way."""
    from trainables.results import DamagedFileWarning, SweepLocation, read_sweep

    sink = make_sink(store)
    for trial_id in ("t_a", "t_b"):
        trial = FakeTrial(trial_id)
        run(sink, trial, EPOCHS)
        complete(sink, trial)
    trials_dir = Path(store, SWEEP, "trials")
    (trials_dir / "notes.txt").write_text("my notes")
    (trials_dir / ".half.parquet.tmp").write_bytes(b"PAR1")
    damaged = trials_dir / "trial=t_b.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.warns(DamagedFileWarning, match="trial=t_b.parquet"):
        assert read_trials(store, SWEEP)["trial_id"].tolist() == ["t_a"]
    assert damaged.exists()  # a reader leaves it be
    location = SweepLocation.of(store, SWEEP)
    with pytest.warns(DamagedFileWarning, match="set aside as"):
        found = read_sweep(location, set_aside_damaged=True)
    assert found.damaged == [str(damaged)] and not damaged.exists()
    assert [p.name.split(".damaged-")[0] for p in trials_dir.glob("*.damaged-*")] == [damaged.name]
    assert found.trials["trial_id"].tolist() == ["t_a"]
    assert set(found.epochs["trial_id"]) == {"t_a", "t_b"}


def test_a_short_copy_never_lands_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final checkpoint copy (a full disk wrote part of it): nothing under the final
    name, no temporary file left, an error naming both paths."""
    source = tmp_path / "checkpoint.pt"
    source.write_bytes(b"x" * 1000)
    target = tmp_path / "results" / "checkpoints" / "t1"
    real_copy = pafs.copy_files

    def short_copy(src: str, dst: str, **kwargs: Any) -> None:
        real_copy(src, dst, **kwargs)
        with open(dst, "r+b") as file:
            file.truncate(0)  # what the disk-full run left

    monkeypatch.setattr(storage.pafs, "copy_files", short_copy)
    with pytest.raises(OSError, match="wrote 0 of 1000 bytes"):
        storage.copy_atomic(source, pafs.LocalFileSystem(), str(target), "checkpoint.pt")
    assert list(target.iterdir()) == []
    monkeypatch.undo()
    storage.copy_atomic(source, pafs.LocalFileSystem(), str(target), "checkpoint.pt")
    assert (target / "checkpoint.pt").read_bytes() == source.read_bytes()


def test_the_trial_status_is_decided_in_one_place() -> None:
    from trainables.results import trial_status

    def status(**kwargs: Any) -> str:
        given = {"errored": False, "reported": "completed", "epochs_run": 3, "total_epochs": 3}
        return trial_status(**{**given, **kwargs})

    assert status() == "completed"
    assert status(reported="running") == "completed"  # stopped by a scheduler at max_t
    assert status(epochs_run=2) == "pruned"
    assert status(reported="diverged", epochs_run=1) == "diverged"
    assert status(reported="failed", epochs_run=0) == "failed"
    assert status(errored=True) == "failed"


@pytest.fixture
def ray_local() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow  # 16-23 s on 2 shared cores, most of it starting and stopping Ray
def test_sink_in_a_real_tuner(ray_local: None, tmp_path: Path) -> None:
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        """Defined here so Ray pickles it by value (workers cannot import the test module)."""
        for epoch in range(1, EPOCHS + 1):
            tune.report({"epoch": epoch, "loss": 1.0 / epoch, "status": "running"})
        if config["method"] == "sabr":
            raise RuntimeError("trial exploded")
        history = [{"epoch": epoch, "loss": 1.0 / epoch} for epoch in range(1, EPOCHS + 1)]
        tune.report(
            {"epoch": EPOCHS, "status": "completed", "seed": 1, "history_json": json.dumps(history)}
        )

    sink = make_sink(str(tmp_path / "results"))
    tuner = tune.Tuner(
        trainable,
        param_space={**CONFIG, "method": tune.grid_search(["ibp", "ibp", "sabr"])},
        run_config=tune.RunConfig(callbacks=[sink], storage_path=str(tmp_path / "ray"), verbose=0),
    )
    tuner.fit()
    frame = read_trials(str(tmp_path / "results"), SWEEP)
    assert sorted(frame["status"]) == ["completed", "completed", "failed"]
    failed = frame[frame.status == "failed"].iloc[0]
    assert "trial exploded" in failed["error"]
    assert failed["param.method"] == "sabr"
    epochs = read_epochs(str(tmp_path / "results"), SWEEP)
    assert epochs.groupby("trial_id").size().tolist() == [EPOCHS] * 3


def test_recertification_never_replaces_a_good_result_with_a_worse_founded_one(
    tmp_path: Path,
) -> None:
    from trainables.results import SweepLocation, read_recertified, write_recertified

    location = SweepLocation.of(str(tmp_path), SWEEP)
    good = {"trial_id": "t1", "verifier": "crown", "split": "test", "status": "completed"}
    assert write_recertified(location, {**good, "n": 360, "cert_acc": 0.5}) is None
    failed = {**good, "status": "failed", "error": "CUDA out of memory"}
    assert write_recertified(location, failed)["n"] == 360  # kept
    assert write_recertified(location, {**good, "n": 10, "cert_acc": 0.9})["n"] == 360
    with pytest.raises(ValueError, match="n >= 1"):
        write_recertified(location, {**good, "n": 0, "cert_acc": 0.0})
    stored = read_recertified(location).iloc[0]
    assert (stored["n"], stored["cert_acc"]) == (360, 0.5)
    assert write_recertified(location, {**good, "n": 400, "cert_acc": 0.4}) is None  # more
    assert write_recertified(location, failed, overwrite=True) is None
    assert read_recertified(location).iloc[0]["status"] == "failed"
    assert write_recertified(location, {**good, "n": 5, "cert_acc": 0.1}) is None  # it failed


def test_recertify_refuses_an_empty_subset() -> None:
    from analysis.recertify import recertify

    for subset in (0, -3):
        with pytest.raises(ValueError, match="subset must be at least 1"):
            recertify("/nowhere", "crown", subset=subset)


def test_recertification_rows_written_before_a_column_was_added_still_read(
    tmp_path: Path,
) -> None:
    from trainables.results import SweepLocation, read_recertified, write_recertified
    from trainables.results.recertification import recertified_dir

    location = SweepLocation.of(str(tmp_path), SWEEP)
    row = {"trial_id": "t1", "verifier": "best", "split": "test", "status": "completed"}
    write_recertified(location, {**row, "n": 9, "cert_acc": 0.5, "certified_by": '{"ibp": 0.5}'})
    folder = Path(recertified_dir(location, "best", "test"))
    current = pq.read_table(folder / "trial=t1.parquet")
    older = current.drop_columns(["certified_by"]).set_column(2, "trial_id", pa.array(["t0"]))
    pq.write_table(older, folder / "trial=t0.parquet")  # before the cascades' column existed
    stored = read_recertified(location).set_index("trial_id")["certified_by"]
    assert stored.isna().tolist() == [True, False] and stored["t1"] == '{"ibp": 0.5}'


def test_certification_rows_are_versioned_and_name_the_attacks_the_code_runs(
    tmp_path: Path,
) -> None:
    from trainables.attacks import autoattack
    from trainables.results.certification import AA_COLUMNS, read_rows, write_rows
    from trainables.results.migrations import SchemaVersionError

    assert tuple(autoattack.AA_COLUMNS.values()) == AA_COLUMNS
    row = {
        "checkpoint": "c.pt",
        "method": "ibp",
        "kind": "certified",
        "split": "test",
        "n": 10,
        "norm": "linf",
        "radius": 0.1,
        "clean_acc": 0.9,
        "cert_acc": 0.5,
        "seconds": 1.0,
        "written_at": pd.Timestamp.now(tz="UTC"),
    }
    path = write_rows([row], tmp_path / "rows.parquet")
    assert read_rows(path).to_pylist()[0]["cert_acc"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]  # no temporary left
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(SchemaVersionError, match=r"other\.parquet"):
        read_rows(tmp_path / "other.parquet")
