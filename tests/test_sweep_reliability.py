"""What stops a sweep before Ray starts, and what a resume rebuilds (no Ray cluster here).

One driver per sweep (a real second process is refused), settings recorded and compared on
resume, the Optuna study checked, repaired and reconciled with the Parquet rows, storage
checked, metric names checked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sweep_helpers import write_short_demo

from search_spaces import SearchSpace
from sweeps import lock as lock_module
from sweeps.__main__ import main
from sweeps.config import SweepConfigError, load_sweep
from sweeps.driver import check_job_storage
from sweeps.lock import SweepLockedError, driver_lock
from sweeps.state import SweepChangedError, check_or_record, remove_sweep
from sweeps.study import (
    ParetoOptunaSearch,
    StudyDamagedError,
    open_study,
    reconcile,
    repair_journal,
    study_storage,
)
from trainables.results import StorageError, SweepLocation
from trainables.results.storage import check_writable
from trainables.tune import stopping_metrics

REPO = Path(__file__).resolve().parents[1]
SPACE = SearchSpace(
    name="t",
    parameters={
        "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "method.name": {"type": "categorical", "choices": ["ibp", "sabr"]},
        "method.sabr_lambda": {
            "type": "float",
            "low": 0.0,
            "high": 1.0,
            "when": {"method.name": "sabr"},
        },
    },
)


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    return write_short_demo(tmp_path, storage=str(tmp_path / "store"), num_trials=3)


# -- one driver per sweep ---------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from sweeps.lock import driver_lock
    with driver_lock(sys.argv[1], "demo"):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_a_second_driver_is_refused_and_a_dead_ones_lock_is_free(sweep_file: Path) -> None:
    """Two real processes: the holder takes the lock, this process is refused (naming the
    holder); once the holder is killed with SIGKILL the lock is free again, with nothing to
    clean up. (``test_sweep_cluster`` refuses a real second ``python -m sweeps run``.)"""
    store = str(sweep_file.parent / "store")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = pytest.raises(SweepLockedError, match=f"pid {holder.pid}, started")
        with refused, driver_lock(store, "demo"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with driver_lock(store, "demo"):  # the kernel released the dead holder's lock
        pass


def test_an_object_store_lock_expires_and_can_be_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No flock on object stores: a heartbeat that stops makes the lock stale."""
    pytest.importorskip("fsspec")
    import fsspec

    store = f"memory://locks-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with driver_lock(store, "demo"):
            with pytest.raises(SweepLockedError, match="--break-lock"), driver_lock(store, "demo"):
                pass
            with driver_lock(store, "demo", break_lock=True):
                pass
        with driver_lock(store, "demo"):  # released on exit
            monkeypatch.setattr(lock_module, "STALE_S", 0.0)
            with driver_lock(store, "demo"):  # stale: taken over
                pass
    finally:
        fsspec.filesystem("memory").rm(store.removeprefix("memory://"), recursive=True)


# -- settings recorded, compared on resume ---------------------------------------------


def test_changed_settings_are_refused_naming_each_key(sweep_file: Path) -> None:
    sweep = load_sweep(sweep_file)
    location = SweepLocation.of(sweep.storage, sweep.name)
    space = sweep.search_space()
    assert check_or_record(location, sweep, space, 0, "v") is False  # new: recorded
    assert check_or_record(location, sweep, space, 0, "v") is True  # same: resumes
    bigger = sweep.model_copy(update={"num_trials": 10, "report_every_s": 5.0})
    assert check_or_record(location, bigger, space, 3, "v") is True  # extends
    changed = sweep.model_copy(update={"training": {**sweep.training, "epochs": 3, "eps": 0.2}})
    with pytest.raises(SweepChangedError) as info:
        check_or_record(location, changed, space, 3, "v")
    message = str(info.value)
    assert "training epochs: 2 -> 3" in message and "training eps: 0.1 -> 0.2" in message
    assert "--fresh" in message
    other_space = sweep.model_copy(
        update={"space": sweep.space.model_copy(update={"preset": "full"})}
    )
    with pytest.raises(SweepChangedError, match=r"space teacher\.name"):
        check_or_record(location, other_space, other_space.search_space(), 3, "v")
    with pytest.raises(SweepChangedError, match="num_trials: 2 is fewer than the 3 run"):
        check_or_record(location, sweep.model_copy(update={"num_trials": 2}), space, 3, "v")


def test_fresh_says_what_it_removes(sweep_file: Path) -> None:
    sweep = load_sweep(sweep_file)
    location = SweepLocation.of(sweep.storage, sweep.name)
    check_or_record(location, sweep, sweep.search_space(), 0, "v")
    folder = Path(sweep.storage) / "demo"
    (folder / "trials").mkdir()
    (folder / "trials" / "trial=a.parquet").write_bytes(b"x")
    (folder / "optuna.journal").write_text("")
    assert remove_sweep(location) == ["trials/ (1 entries)", "optuna.journal", "sweep.json"]
    assert not (folder / "trials").exists() and not (folder / "sweep.json").exists()


# -- the Optuna study: checked, repaired, reconciled -----------------------------------


def _journal_with_trials(path: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(
        study_name="demo", storage=storage, directions=["maximize", "maximize"]
    )
    for _ in range(2):
        study.ask().suggest_float("optim.lr", 1e-3, 1e-1, log=True)
    return study


def test_a_journal_cut_short_is_repaired_and_other_damage_named(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    _journal_with_trials(path)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "trial')  # killed mid-write
    message = repair_journal(path)
    assert message is not None and "unfinished last line" in message
    assert path.read_bytes() == whole
    assert len(list(tmp_path.glob("optuna.journal.damaged-*"))) == 1
    assert repair_journal(path) is None
    lines = whole.split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b"{not json", *lines[1:]]))
    with pytest.raises(StudyDamagedError, match=r"optuna.journal is damaged at line 2"):
        repair_journal(path)


def _rows(entries: list[dict]) -> pd.DataFrame:
    base = {"config_json": json.dumps({"optim.lr": 0.01, "method.name": "ibp"})}
    values = {"val_clean_acc": 0.5, "val_final_cert_acc": 0.2}
    return pd.DataFrame([{**base, **values, **e} for e in entries])


def test_reconcile_adds_rows_tells_ends_and_reruns_cut_off_trials(sweep_file: Path) -> None:
    """The rows are the truth: the study gets what it lacks; a trial RUNNING without a row
    (its driver died) is told FAIL and its configuration queued with its checkpoint
    folders; a trial told COMPLETE whose row was never written runs again too."""
    sweep = load_sweep(sweep_file).model_copy(update={"optuna_storage": "journal"})
    storage = study_storage(sweep, str(sweep_file.parent))
    study = open_study(sweep, storage, "test")
    assert study.metric_names == ["val_clean_acc", "val_final_cert_acc"]
    attrs = [("t_told", "ray/demo/demo_0_t_told"), ("t_cut", "ray/demo/demo_1_t_cut")]
    attrs.append(("t_lost", "ray/demo/demo_2_t_lost"))
    for trial_id, folder in attrs:
        trial = study.ask()
        trial.suggest_float("optim.lr", 1e-3, 1e-1, log=True)
        trial.suggest_categorical("method.name", ["ibp", "sabr"])
        trial.set_user_attr("trial_id", trial_id)
        trial.set_user_attr("folder", folder)
    study.tell(2, [0.9, 0.1])  # t_lost: told, but its row never written
    rows = _rows(
        [
            {"trial_id": "t_told", "status": "completed"},
            {"trial_id": "t_old", "status": "pruned"},
            {"trial_id": "t_bad", "status": "failed"},
        ]
    )
    done = reconcile(study, rows, SPACE, sweep)
    assert (done.added, done.told, done.rerun) == (2, 1, 2)
    states = {t.user_attrs.get("trial_id"): t.state for t in study.trials}
    assert states["t_told"] == TrialState.COMPLETE and states["t_cut"] == TrialState.FAIL
    assert states["t_old"] == TrialState.PRUNED and states["t_bad"] == TrialState.FAIL
    assert study.trials[0].values == [0.5, 0.2]
    waiting = study.get_trials(states=[TrialState.WAITING])
    assert [t.user_attrs["resumes"] for t in waiting] == [
        ["ray/demo/demo_1_t_cut"],
        ["ray/demo/demo_2_t_lost"],
    ]
    assert waiting[0].params == {} and waiting[0].system_attrs["fixed_params"] == (
        study.trials[1].params
    )
    again = reconcile(study, rows, SPACE, sweep)  # nothing is queued twice
    assert (again.added, again.told, again.rerun) == (0, 0, 0)


def test_a_study_rebuilt_from_rows_has_the_searched_distributions(sweep_file: Path) -> None:
    sweep = load_sweep(sweep_file)
    study = open_study(sweep, study_storage(sweep, str(sweep_file.parent)), "memory")
    config = json.dumps({"optim.lr": 0.02, "method.name": "sabr", "method.sabr_lambda": 0.3})
    rows = _rows([{"trial_id": "a", "status": "completed", "config_json": config}])
    rows.loc[0, "val_final_cert_acc"] = math.nan  # a missing value counts as the worst
    reconcile(study, rows, SPACE, sweep)
    (trial,) = study.trials
    assert trial.params == {"optim.lr": 0.02, "method.name": "sabr", "method.sabr_lambda": 0.3}
    assert trial.distributions["optim.lr"].log and trial.values == [0.5, 0.0]


def test_the_searcher_records_trial_ids_and_tells_statuses() -> None:
    searcher = ParetoOptunaSearch(
        space=lambda trial: {"x": trial.suggest_float("x", 0, 1)},
        metric=["a", "b"],
        mode=["max", "max"],
        total_epochs=5,
        constraints={"a": 0.5},
        folder_of=lambda trial_id, number: f"ray/e/{number}_{trial_id}",
    )
    for trial_id, result in (
        ("full", {"a": 0.4, "b": 0.9, "epoch": 5}),
        ("short", {"a": 0.4, "b": 0.9, "epoch": 2}),
        ("bad", {"a": 0.0, "b": 0.0, "epoch": 0, "status": "failed"}),
    ):
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, result)
    trials = searcher._ot_study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert [t.user_attrs["trial_id"] for t in trials] == ["full", "short", "bad"]
    assert trials[1].user_attrs["folder"] == "ray/e/1_short"
    assert trials[0].user_attrs["constraints"] == pytest.approx([0.1])


# -- storage and metric names -----------------------------------------------------------


def test_unwritable_storage_is_one_message_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(StorageError, match=f"the storage {a_file} is a file"):
        check_writable(str(a_file), "demo")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "demo").write_text("")  # a file where the sweep's folder goes
    with pytest.raises(StorageError, match=f"the storage {tmp_path}/store/demo is a file"):
        check_writable(str(tmp_path / "store"), "demo")
    (tmp_path / "store" / "demo").unlink()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    from trainables.results import storage

    monkeypatch.setattr(storage, "write_bytes_atomic", read_only)
    with pytest.raises(StorageError, match=r"cannot write .*store/demo: .*Read-only"):
        check_writable(str(tmp_path / "store"), "demo")


def test_the_run_command_stops_on_bad_storage_before_ray(
    sweep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = sweep_file.parent / "a_file"
    a_file.write_text("")
    assert main(["run", str(sweep_file), "--storage", str(a_file)]) == 2
    assert f"the storage {a_file} is a file" in capsys.readouterr().err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_relative_storage_is_refused_under_job_submission(monkeypatch: pytest.MonkeyPatch) -> None:
    check_job_storage("sweeps-results")  # fine on a laptop
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    with pytest.raises(StorageError, match=r"storage 'sweeps-results' \(key 'storage'"):
        check_job_storage("sweeps-results")
    check_job_storage("/shared/sweeps")
    check_job_storage("s3://bucket/sweeps")


def test_unknown_objective_and_constraint_metrics_are_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load(write_short_demo(tmp_path).read_text())
    raw["objectives"] = [{"metric": "val_clean_accc"}, {"metric": "val_cert_acc"}]
    raw["constraints"] = [{"metric": "val_pgd_ac", "min": 0.1}]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SweepConfigError) as info:
        load_sweep(path)
    assert "objectives.0.metric" in str(info.value) and "val_clean_accc" in str(info.value)
    assert "constraints.0.metric" in str(info.value)


# -- what a trial reports, what the driver prints ---------------------------------------


def test_a_replaced_objective_keeps_its_reason_in_every_epoch_that_carries_it() -> None:
    from trainables.tune import _Reporter

    reporter = _Reporter({"val_clean_acc": "max", "val_cert_acc": "max"}, devices=1, provenance={})
    first = reporter.finite_objectives({"epoch": 1, "val_clean_acc": 0.5})
    assert first["val_cert_acc"] == 0.0 and "val_cert_acc not evaluated" in first["nan_reason"]
    second = reporter.finite_objectives(
        {"epoch": 2, "val_clean_acc": 0.6, "val_cert_acc": math.nan}
    )
    assert second["val_cert_acc"] == 0.0
    assert "val_cert_acc=nan in epoch 2 replaced by 0.0" in second["nan_reason"]
    carried = reporter.finite_objectives({"epoch": 3})  # no evaluation this epoch
    assert (carried["val_clean_acc"], carried["val_cert_acc"]) == (0.6, 0.0)
    assert "val_cert_acc=nan in epoch 2" in carried["nan_reason"]
    fine = reporter.finite_objectives({"epoch": 4, "val_clean_acc": 0.7, "val_cert_acc": 0.2})
    assert "nan_reason" not in fine and fine["score"] == pytest.approx(0.45)
    assert "nan_reason" not in reporter.finite_objectives({"epoch": 5})  # real values carried


def test_the_final_certificate_is_reported_at_the_end_only_and_pruned_trials_get_none(
    tmp_path: Path, sweep_file: Path
) -> None:
    """Epoch reports leave ``val_final_cert_acc`` None (the per-epoch ``val_cert_acc`` stands
    in for early stopping and ``score``); a trial stopped early is told PRUNED and its row
    holds null; a finished one is told the final verifier's value."""
    from torch import nn

    from sweeps.config import EarlyStopping
    from sweeps.driver import build_scheduler
    from sweeps.sink import epoch_metrics
    from trainables.results import SweepWriter, read_trials
    from trainables.training.loop import RunResult
    from trainables.tune import _final_report, _Reporter

    objectives = {"val_clean_acc": "max", "val_final_cert_acc": "max"}
    reporter = _Reporter(objectives, devices=1, provenance={"final_verifier": "best"})
    reporter.epochs = 3
    first = reporter.epoch_report({"epoch": 1, "val_clean_acc": 0.6, "val_cert_acc": 0.2})
    assert first["val_final_cert_acc"] is None and "nan_reason" not in first
    assert first["score"] == pytest.approx(0.4)  # on the per-epoch stand-in
    second = reporter.epoch_report({"epoch": 2, "val_clean_acc": 0.7})  # not evaluated
    assert (second["val_cert_acc"], second["val_final_cert_acc"]) == (0.2, None)
    history = [{"epoch": 3, "val_clean_acc": 0.8, "val_cert_acc": 0.1}]
    final_metrics = {"test_cert_acc": 0.3, "val_final_cert_acc": 0.45, "test_verifier": "best"}
    result = RunResult("completed", 3, history, final_metrics, None, nn.Identity())
    final = _final_report(result, reporter, seed=0)
    assert (final["val_final_cert_acc"], final["val_cert_acc"]) == (0.45, 0.1)
    assert "nan_reason" not in final and final["score"] == pytest.approx(0.45)

    searcher = ParetoOptunaSearch(
        space=lambda trial: {"x": trial.suggest_float("x", 0, 1)},
        metric=list(objectives),
        mode=list(objectives.values()),
        total_epochs=3,
        constraints={},
        folder_of=lambda trial_id, number: f"ray/e/{number}_{trial_id}",
    )
    for trial_id, last in (("short", second), ("full", final)):
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, last)
    short, full = searcher._ot_study.trials
    assert (short.state, short.values) == (TrialState.PRUNED, None)
    assert (full.state, full.values) == (TrialState.COMPLETE, [0.8, 0.45])
    writer = SweepWriter(
        str(tmp_path),
        "s",
        param_types={},
        total_epochs=3,
        objectives=list(objectives),
        code_version="v",
    )
    history_seen = {1: epoch_metrics(first), 2: epoch_metrics(second)}
    assert writer.write("short", config={}, last=second, history=history_seen) == "pruned"
    row = read_trials(str(tmp_path), "s").iloc[0]
    assert pd.isna(row["val_final_cert_acc"]) and row["val_cert_acc"] == 0.2

    # early stopping compares trials on the per-epoch certificate in its place
    sweep = load_sweep(sweep_file)
    mo_asha = sweep.model_copy(update={"early_stopping": EarlyStopping(kind="mo-asha")})
    scheduler = build_scheduler(mo_asha, sweep.training_config())
    assert scheduler._metrics == ("val_clean_acc", "val_cert_acc")


def test_the_front_fits_the_width_and_names_what_it_leaves_out() -> None:
    from sweeps.progress import WIDTH, front_text

    rows = []
    for i in range(4):
        row = {
            "trial_id": f"t{i}",
            "status": "completed",
            "epochs_run": 2,
            "total_epochs": 2,
            "val_clean_acc": 0.9 - 0.1 * i,
            "val_cert_acc": 0.1 + 0.1 * i,
            "test_clean_acc": 0.8,
            "test_cert_acc": 0.3,
            "test_verifier": "crown",
            "param.fixed_on_front": 1.0,
        }
        row.update({f"param.group.a_long_parameter_name_{k}": 0.01 * (i + k) for k in range(6)})
        rows.append(row)
    text = front_text(pd.DataFrame(rows), ["val_clean_acc", "val_cert_acc"], ["maximize"] * 2)
    lines = text.splitlines()
    assert lines[0] == "Pareto front: 4 of 4 trials (4 completed)"
    assert max(map(len, lines)) <= WIDTH
    assert "fixed_on_front" not in text  # a parameter the same on every member: the report's
    assert "the same on the front: test_clean_acc=0.8000" in text and "test_verifier=crown" in text
    assert "not shown (see the report): " in text and "a_long_parameter_name_5" in text


def test_one_line_per_finished_trial_with_the_front(capsys: pytest.CaptureFixture) -> None:
    from types import SimpleNamespace

    from sweeps.progress import ProgressPrinter, TrialNames

    class Searcher:
        def number(self, trial_id: str) -> int:
            return int(trial_id[1:])

    names = TrialNames("demo", "demo", Searcher())
    sink = SimpleNamespace(statuses={"t3": "completed", "t4": "pruned"})
    printer = ProgressPrinter(
        names,
        {"val_clean_acc": "max", "val_cert_acc": "max"},
        total_trials=16,
        total_epochs=6,
        every_s=0,
        sink=sink,
        previous=[[0.5, 0.5]],
        done=3,
    )
    done = SimpleNamespace(
        trial_id="t3",
        last_result={"val_clean_acc": 0.9, "val_cert_acc": 0.25, "epoch": 6, "wall_time_s": 41},
    )
    printer.on_trial_complete(0, [], done)
    pruned = SimpleNamespace(trial_id="t4", last_result={"val_clean_acc": 0.2, "epoch": 2})
    printer.on_trial_complete(0, [], pruned)
    running = SimpleNamespace(
        trial_id="t5", status="RUNNING", last_result={"epoch": 3, "val_clean_acc": 0.7}
    )
    printer.on_step_end(0, [running])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "[ 4/16] demo_3_t3 completed 6/6   41s val_clean_acc=0.9000 val_cert_acc=0.2500"
        " | front 2, HV 0.3500"
    )
    assert lines[1].startswith("[ 5/16] demo_4_t4 pruned    2/6    -s") and "front 2" in lines[1]
    assert lines[2] == "1 running, 5/16 finished; front 2, HV 0.3500"
    assert lines[4].split() == ["demo_5_t5", "3/6", "0.7000", "-"]


def test_the_running_table_shows_the_stand_in_of_a_final_only_objective(capsys) -> None:
    from types import SimpleNamespace

    from sweeps.progress import ProgressPrinter, TrialNames

    class Searcher:
        def number(self, trial_id: str) -> int:
            return int(trial_id[1:])

    objectives = {"val_clean_acc": "max", "val_final_cert_acc": "max"}
    printer = ProgressPrinter(
        TrialNames("demo", "demo", Searcher()),
        objectives,
        total_trials=4,
        total_epochs=6,
        every_s=0,
        sink=SimpleNamespace(statuses={}),
        live=list(stopping_metrics(objectives, "val")),
    )
    running = SimpleNamespace(
        trial_id="t1",
        status="RUNNING",
        last_result={"epoch": 2, "val_clean_acc": 0.7, "val_cert_acc": 0.3},
    )
    printer.on_step_end(0, [running])
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert header.split() == [
        "trial",
        "epoch",
        "val_clean_acc",
        "val_final_cert_acc",
        "val_cert_acc",
    ]
    assert row.split() == ["demo_1_t1", "2/6", "0.7000", "-", "0.3000"]


def test_a_rerun_resumes_from_the_newest_checkpoint_that_loads(tmp_path: Path) -> None:
    """A trial cut off by a killed driver left Tune checkpoints in its folder; the newest one
    was cut short by the kill: its re-run starts from the newest one that loads."""
    from trainables.checkpoints import load_checkpoint, save_checkpoint
    from trainables.tune import _copy_newest_checkpoint

    folder = tmp_path / "ray" / "demo" / "demo_1_abc"
    save_checkpoint(folder / "checkpoint_000000" / "checkpoint.pt", {"epoch": 1})
    save_checkpoint(folder / "checkpoint_000001" / "checkpoint.pt", {"epoch": 2})
    (folder / "checkpoint_000002").mkdir()
    (folder / "checkpoint_000002" / "checkpoint.pt").write_bytes(b"half a file")
    workdir = tmp_path / "work"
    workdir.mkdir()
    _copy_newest_checkpoint(str(tmp_path), ["ray/demo-2/gone", "ray/demo/demo_1_abc"], workdir)
    assert load_checkpoint(workdir / "checkpoint.pt")["epoch"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    _copy_newest_checkpoint(str(tmp_path), ["ray/demo/nothing"], empty)
    assert not list(empty.iterdir())  # nothing to resume from: the trial starts at epoch 0
