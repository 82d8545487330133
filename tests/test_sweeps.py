"""Sweep configs are validated up front; the driver runs, resumes, extends and tells Optuna
the truth (one module-scoped local Ray for the runs)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import ray
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from sweep_helpers import write_short_demo

from search_spaces import load_space
from sweeps import CONFIGS_DIR
from sweeps.__main__ import main
from sweeps.config import SweepConfig, SweepConfigError, load_sweep
from sweeps.driver import SweepResourcesError, run_sweep
from sweeps.progress import WIDTH
from sweeps.state import SweepChangedError
from sweeps.study import OPTUNA_FILES
from sweeps.teachers import sweep_teachers
from trainables.results import read_epochs, read_trials

DEMO = CONFIGS_DIR / "demo.yaml"

#: A teacher recipe that trains in seconds (the demo's pgd-at-digits-fast takes 8).
TINY_TEACHER = {
    "dataset.name": "digits",
    "model.name": "cnn_small",
    "method.name": "pgd-at",
    "eps": 0.1,
    "epochs": 1,
    "eps_schedule.length": 1,
    "eval.pgd_steps": 2,
    "eval.subset": 50,
}


@pytest.mark.parametrize("path", sorted(CONFIGS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_ready_configs_validate(path: Path) -> None:
    """... and tune on the final verifier's certificate of the validation split."""
    sweep = load_sweep(path)
    assert [o.metric for o in sweep.objectives] == ["val_clean_acc", "val_final_cert_acc"]
    assert sweep.training_config().eval.final_verifier is not None
    assert main(["validate", str(path)]) == 0


def test_the_default_objectives_are_clean_and_final_certified_accuracy_on_val() -> None:
    default = [(o.metric, o.mode) for o in SweepConfig(name="s").objectives]
    assert default == [("val_clean_acc", "max"), ("val_final_cert_acc", "max")]


def _write(tmp_path: Path, change: dict) -> Path:
    raw = yaml.safe_load(DEMO.read_text())
    for key, value in change.items():
        node = raw
        *parents, leaf = key.split("/")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"num_trail": 3}, "num_trail: unknown key"),
        ({"sampler": {"name": "cmaes"}}, "sampler.name"),
        ({"resources": {"workers": 1, "cpus_per_worker": -1}}, "resources.cpus_per_worker"),
        ({"training/optim.lrr": 0.1}, "optim.lrr: unknown key"),
        ({"space": {"preset": "nope"}}, "nope"),
        ({"space/overrides/optim.lr": {"type": "float", "low": 1, "high": 0}}, "optim.lr"),
        ({"training/optim.lr": 0.01}, "fixes searched key(s) ['optim.lr']"),
        (
            {"training/eval.final_verifier": None},
            "objectives.1.metric: val_final_cert_acc is measured by"
            " training.eval.final_verifier, which is null",
        ),
        (
            {"training/eval.verifier": None, "early_stopping": {"kind": "mo-asha"}},
            "early_stopping.kind: mo-asha compares unfinished trials on val_cert_acc",
        ),
    ],
)
def test_bad_configs_fail_naming_file_and_key(tmp_path, change, named) -> None:
    path = _write(tmp_path, change)
    with pytest.raises(SweepConfigError) as info:
        load_sweep(path)
    assert str(path) in str(info.value) and named in str(info.value)
    assert main(["validate", str(path)]) == 2


def test_durable_study_needs_a_local_storage(tmp_path) -> None:
    path = _write(tmp_path, {"storage": "s3://bucket/sweeps", "optuna_storage": "journal"})
    with pytest.raises(SweepConfigError, match=r"optuna_storage='journal'.*is a URI"):
        load_sweep(path)


def test_sweep_teachers_are_the_fixed_one_or_the_searched_choices() -> None:
    sweep = load_sweep(DEMO)
    assert sweep_teachers(sweep, sweep.search_space()) == ["pgd-at-digits-fast"]
    fixed = sweep.model_copy(update={"training": {**sweep.training, "teacher.name": "trades"}})
    assert sweep_teachers(fixed, load_space("certified")) == ["trades"]
    assert (
        sweep_teachers(
            load_sweep(DEMO).model_copy(update={"training": {}}), load_space("certified")
        )
        == []
    )


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


class _Planted:
    """A pickle that, when loaded, writes a marker file (what a planted state file does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def plant_pickles(experiment: Path, marker: Path) -> list[str]:
    """Replace every state file Tune could unpickle on a restore by a planted pickle."""
    import pickle

    planted = []
    for path in experiment.rglob("*"):
        if path.is_file() and (
            path.suffix == ".pkl" or path.name.startswith(("experiment_state", "search_gen_state"))
        ):
            path.write_bytes(pickle.dumps(_Planted(marker)))
            planted.append(path.name)
    return planted


def trial_files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()}


def mlflow_runs(results: Path, experiment: str) -> dict[str, int]:
    """Run name -> number of logged ``val_cert_acc`` steps, from the default MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    assert all(run.data.params.get("method.name") for run in runs)  # the sampled parameters
    return {
        run.info.run_name: len(client.get_metric_history(run.info.run_id, "val_cert_acc"))
        for run in runs
    }


def tensorboard_tags(trial_folder: Path) -> set[str]:
    """The scalar tags in a trial folder's TensorBoard event files."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    tags = set()
    for path in trial_folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        while data:  # TFRecord frames: length, its CRC, the event, its CRC
            (length,) = struct.unpack("<Q", data[:8])
            event = Event.FromString(data[12 : 12 + length])
            tags |= {value.tag for value in event.summary.value}
            data = data[16 + length :]
    return tags


def test_demo_sweep_runs_resumes_and_extends(tmp_path, local_ray, capsys) -> None:
    registry = tmp_path / "teachers.yaml"
    registry.write_text(yaml.safe_dump({"teachers": {"tiny-pgd": {"recipe": TINY_TEACHER}}}))
    path = write_short_demo(
        tmp_path,
        training={
            "teacher.registry": str(registry),
            "teacher.cache_dir": str(tmp_path / "teachers"),
        },
        space={"teacher.name": {"type": "categorical", "choices": ["none", "tiny-pgd"]}},
        storage=str(tmp_path),
        num_trials=3,
        optuna_storage="journal",
        loggers=["mlflow", "tensorboard"],
    )
    sweep = load_sweep(path)
    outcome = run_sweep(sweep)
    results = outcome.results
    assert (outcome.trials, outcome.completed) == (3, 3)
    printed = capsys.readouterr().out
    assert "teacher stage: 'tiny-pgd' ready" in printed
    assert len(list((tmp_path / "teachers").glob("*/teacher.pt"))) == 1
    trials = read_trials(str(tmp_path), "demo")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    assert trials["test_cert_acc"].between(0, 1).all()
    assert trials["val_final_cert_acc"].between(0, 1).all()  # the final verifier's, on val
    assert trials["checkpoint_uri"].notna().all()
    provenance = ["eval_verifier", "eval_split", "final_verifier", "final_split", "cert_eps"]
    assert set(map(tuple, trials[provenance].values)) == {("crown-ibp", "val", "best", "test", 0.1)}
    assert (trials["epochs_run"] == 2).all()
    assert len(read_epochs(str(tmp_path), "demo")) == 6
    assert f"report: {results}/report/index.html" in printed
    # names: the experiment is the sweep's, trials <sweep>_<number>_<id>, one line each
    experiment = tmp_path / "demo" / "ray" / "demo"
    folders = sorted(p.name for p in experiment.iterdir() if p.is_dir())
    numbers = sorted(int(name.split("_")[1]) for name in folders)
    assert numbers == [0, 1, 2] and all(name.startswith("demo_") for name in folders)
    assert {name.split("_", 2)[2] for name in folders} == set(trials["trial_id"])
    finished = [line for line in printed.splitlines() if line.startswith("[")]
    assert [line[:5] for line in finished] == ["[1/3]", "[2/3]", "[3/3]"]
    assert all("completed" in line and "val_final_cert_acc" in line for line in finished)
    front = printed[printed.index("Pareto front:") : printed.index("results (Parquet)")]
    assert max(len(line) for line in front.splitlines()) <= WIDTH
    assert "SearchGenerator" not in printed and "TensorBoard" not in printed  # Ray is quiet
    # Optuna: named metrics, Tune's trial ids on the trials
    journal = JournalStorage(JournalFileBackend(f"{results}/{OPTUNA_FILES['journal']}"))
    study = optuna.load_study(study_name="demo", storage=journal)
    assert study.metric_names == ["val_clean_acc", "val_final_cert_acc"]
    told = {t.user_attrs["trial_id"]: t.values[1] for t in study.trials}
    assert told == dict(zip(trials["trial_id"], trials["val_final_cert_acc"], strict=True))
    assert {t.user_attrs["trial_id"] for t in study.trials} == set(trials["trial_id"])
    # trackers: one MLflow run per trial (per-epoch metrics, its parameters), TensorBoard files
    assert mlflow_runs(tmp_path / "demo", "demo") == {name: 2 for name in folders}  # 2 epochs each
    objectives = {"ray/tune/val_clean_acc", "ray/tune/val_final_cert_acc"}
    assert all(objectives <= tensorboard_tags(experiment / name) for name in folders)

    # a resume restores nothing from Ray's files: planted pickles there never run
    marker = tmp_path / "marker"
    assert plant_pickles(experiment, marker)
    written = trial_files(tmp_path / "demo")
    again = run_sweep(sweep)  # the same sweep again: nothing to run
    assert (again.trials, again.completed) == (3, 3)
    assert trial_files(tmp_path / "demo") == written
    assert "resuming sweep 'demo': 3 of 3 trials finished, 0 to run" in capsys.readouterr().out

    changed = sweep.model_copy(update={"training": {**sweep.training, "eps": 0.2}})
    with pytest.raises(SweepChangedError, match=r"training eps: 0\.1 -> 0\.2"):
        run_sweep(changed)

    extended = run_sweep(sweep.model_copy(update={"num_trials": 4}))  # a larger budget
    assert (extended.trials, extended.completed) == (4, 4)
    assert {k: v for k, v in trial_files(tmp_path / "demo").items() if k in written} == written
    assert (tmp_path / "demo" / "ray" / "demo-2").is_dir()
    assert not marker.exists()
    study = optuna.load_study(study_name="demo", storage=journal)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert len(mlflow_runs(tmp_path / "demo", "demo")) == 4  # the same MLflow experiment


def test_a_sweep_that_needs_gpus_fails_before_any_trial(tmp_path, local_ray) -> None:
    path = write_short_demo(
        tmp_path, storage=str(tmp_path), name="gpu", resources={"gpus_per_worker": 1}
    )
    with pytest.raises(SweepResourcesError, match=r"1 GPU\(s\).*0 GPUs in all"):
        run_sweep(load_sweep(path))
    assert read_trials(str(tmp_path), "gpu").empty


def test_deterministic_errors_fail_once_and_the_run_exits_non_zero(
    tmp_path, local_ray, capsys
) -> None:
    """A teacher checkpoint that cannot be loaded: the trial fails at once (Tune does not
    retry it, although max_failures allows it) and a sweep with no completed trial exits 1."""
    broken = tmp_path / "teacher.pt"
    broken.write_bytes(b"not a checkpoint")
    registry = tmp_path / "teachers.yaml"
    entry = {"model": "cnn_small", "checkpoint": str(broken)}
    registry.write_text(yaml.safe_dump({"teachers": {"broken": entry}}))
    path = write_short_demo(
        tmp_path,
        training={"teacher.registry": str(registry), "teacher.name": "broken"},
        storage=str(tmp_path),
        name="broken",
        num_trials=1,
        max_failures=2,
    )
    assert main(["run", str(path)]) == 1
    assert "no trial of sweep 'broken' completed" in capsys.readouterr().err
    (row,) = read_trials(str(tmp_path), "broken").to_dict("records")
    assert row["status"] == "failed" and "TeacherError" in row["error"]
    assert not list((tmp_path / "broken" / "ray").rglob("error.txt"))  # never raised
    assert not list((tmp_path / "broken" / "ray").rglob("events.out.tfevents.*"))  # not asked
    assert list((tmp_path / "broken" / "ray").rglob("result.json"))  # Tune's own record
