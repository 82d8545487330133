"""Sweep configs are validated up front; the driver runs, resumes and tells Optuna the truth."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import ray
import yaml

from sweeps.__main__ import main
from sweeps.config import CONFIGS_DIR, SweepConfigError, load_sweep
from sweeps.driver import ParetoOptunaSearch, run_sweep
from sweeps.results import read_epochs, read_trials

DEMO = CONFIGS_DIR / "demo.yaml"


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


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_demo_sweep_runs_and_resumes_without_repeating(tmp_path, local_ray, capsys) -> None:
    overrides = {"storage": str(tmp_path), "num_trials": 3}
    sweep = load_sweep(DEMO, overrides)
    short = {"epochs": 2, "eval.every": 1, "eps_schedule.length": 1}
    sweep = sweep.model_copy(update={"training": {**sweep.training, **short}})
    sweep.space.overrides.update({"eps_schedule.start": None, "eps_schedule.length": None})
    results = run_sweep(sweep)
    trials = read_trials(str(tmp_path), "demo")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    assert trials["test_cert_acc"].between(0, 1).all()
    assert trials["checkpoint_uri"].notna().all()
    assert (trials["epochs_run"] == 2).all()
    assert len(read_epochs(str(tmp_path), "demo")) == 6
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and results in printed
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "demo" / "trials").iterdir()}
    run_sweep(sweep)  # the same sweep again: restored, nothing re-run
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "demo" / "trials").iterdir()}
    assert again == written
    assert "resuming sweep 'demo'" in capsys.readouterr().out
