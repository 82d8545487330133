"""Sweep configs are validated up front; the driver runs, resumes and tells Optuna the truth."""

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
from sweeps.__main__ import main
from sweeps.config import CONFIGS_DIR, SweepConfigError, load_sweep
from sweeps.driver import OPTUNA_FILES, ParetoOptunaSearch, run_sweep
from sweeps.results import read_epochs, read_trials
from sweeps.teachers import sweep_teachers

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
    load_sweep(path)
    assert main(["validate", str(path)]) == 0


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
    ],
)
def test_bad_configs_fail_naming_file_and_key(tmp_path, change, named) -> None:
    path = _write(tmp_path, change)
    with pytest.raises(SweepConfigError) as info:
        load_sweep(path)
    assert str(path) in str(info.value) and named in str(info.value)
    assert main(["validate", str(path)]) == 2


def test_early_stopped_trials_are_told_as_pruned() -> None:
    searcher = ParetoOptunaSearch(
        space=lambda trial: {"x": trial.suggest_float("x", 0, 1)},
        metric=["a", "b"],
        mode=["max", "max"],
        total_epochs=5,
        constraints={"a": 0.5},
    )
    for trial_id, epoch in (("full", 5), ("short", 2)):
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, {"a": 0.4, "b": 0.9, "epoch": epoch})
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert searcher._ot_study.trials[0].user_attrs["constraints"] == pytest.approx([0.1])


def _one_float(trial: optuna.Trial) -> dict[str, float]:  # picklable, as Tune needs
    return {"x": trial.suggest_float("x", 0, 1)}


def test_restored_searcher_fails_the_durable_studys_orphans(tmp_path) -> None:
    """Trials asked after Tune's last snapshot stay RUNNING in a journal: FAIL on restore."""
    journal = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))

    def searcher() -> ParetoOptunaSearch:
        return ParetoOptunaSearch(
            space=_one_float,
            metric=["a", "b"],
            mode=["max", "max"],
            study_name="s",
            storage=journal,
            total_epochs=1,
            constraints={},
        )

    first = searcher()
    first.suggest("done")
    first.on_trial_complete("done", {"a": 0.5, "b": 0.5, "epoch": 1})
    first.suggest("running")
    first.save(str(tmp_path / "snapshot.pkl"))
    first.suggest("orphan")  # asked after the snapshot; the driver dies now
    restored = searcher()
    restored.restore(str(tmp_path / "snapshot.pkl"))
    study = optuna.load_study(study_name="s", storage=journal)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING", "FAIL"]


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


def test_demo_sweep_runs_and_resumes_without_repeating(tmp_path, local_ray, capsys) -> None:
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
    )
    sweep = load_sweep(path)
    results = run_sweep(sweep)
    printed = capsys.readouterr().out
    assert "teacher stage: 'tiny-pgd' ready" in printed
    assert len(list((tmp_path / "teachers").glob("*/teacher.pt"))) == 1
    trials = read_trials(str(tmp_path), "demo")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    assert trials["test_cert_acc"].between(0, 1).all()
    assert trials["checkpoint_uri"].notna().all()
    assert (trials["epochs_run"] == 2).all()
    assert len(read_epochs(str(tmp_path), "demo")) == 6
    assert "Pareto front" in printed and results in printed
    assert f"report: {results}/report/index.html" in printed
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "demo" / "trials").iterdir()}
    run_sweep(sweep)  # the same sweep again: restored, nothing re-run
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "demo" / "trials").iterdir()}
    assert again == written
    assert "resuming sweep 'demo'" in capsys.readouterr().out
    journal = JournalStorage(JournalFileBackend(f"{results}/{OPTUNA_FILES['journal']}"))
    study = optuna.load_study(study_name="demo", storage=journal)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
