"""The sweep config's ``loggers`` are checked at the edge and become Tune's logger callbacks
(the MLflow and TensorBoard files a real sweep writes: tests/test_sweeps.py)."""

from __future__ import annotations

import importlib.util

import pytest
from sweep_helpers import write_short_demo

from sweeps.config import SweepConfigError, load_sweep
from sweeps.trackers import JOB_ENV, MLflowTracker, callbacks


def _sweep(tmp_path, loggers, **top_level):
    return load_sweep(write_short_demo(tmp_path, loggers=loggers, **top_level))


def test_names_alone_take_the_defaults_and_become_tune_callbacks(tmp_path, monkeypatch) -> None:
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = _sweep(tmp_path, ["mlflow", {"name": "tensorboard"}], storage=str(tmp_path))
    mlflow, tensorboard = sweep.loggers
    assert mlflow.store(f"{tmp_path}/demo") == f"sqlite:///{tmp_path}/demo/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert mlflow.store(f"{tmp_path}/demo") == "http://mlflow.example:5000"
    made = callbacks([tensorboard], "demo", "demo", f"{tmp_path}/demo")
    assert [type(c) for c in made] == [CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback]
    assert [type(c) for c in callbacks([], "demo", "demo", "x")] == [
        CSVLoggerCallback,
        JsonLoggerCallback,
    ]


@pytest.mark.parametrize(
    ("loggers", "storage", "named"),
    [
        (["mlfow"], None, "loggers.0.name: unknown 'mlfow' (did you mean mlflow?)"),
        ([{"name": "tensorboard", "logdir": "x"}], None, "loggers.0.logdir: unknown key"),
        (["tensorboard", "mlflow", "tensorboard"], None, "loggers: tensorboard named more"),
        (["mlflow"], "s3://bucket/sweeps", "loggers.0.tracking_uri: needed, as storage is a URI"),
        ([{"name": "wandb", "mode": "offlne"}], None, "loggers.0.mode: Input should be"),
    ],
)
def test_bad_loggers_are_named(tmp_path, monkeypatch, loggers, storage, named) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    top_level = {"storage": storage, "optuna_storage": "none"} if storage else {}
    with pytest.raises(SweepConfigError, match="invalid sweep config") as err:
        _sweep(tmp_path, loggers, **top_level)
    assert named in str(err.value)


def test_a_missing_package_names_the_key_and_the_extra(tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        "sweeps.trackers.find_spec", lambda name: None if name == "mlflow" else real(name)
    )
    with pytest.raises(SweepConfigError) as err:
        _sweep(tmp_path, ["tensorboard", "mlflow"])
    assert (
        "  loggers.1: the mlflow logger needs the package 'mlflow-skinny', which is not"
        " installed here (the loggers run in the sweep's driver): pip install"
        " 'certsweep[trackers]'"
    ) in str(err.value)


def test_relative_stores_are_made_absolute_and_refused_under_job_submit(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tracker = MLflowTracker(name="mlflow", tracking_uri="sqlite:///runs/mlflow.db")
    assert tracker.tracking_uri == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert MLflowTracker(name="mlflow", tracking_uri="mlruns").tracking_uri == f"{tmp_path}/mlruns"
    server = "http://mlflow.example:5000"
    assert MLflowTracker(name="mlflow", tracking_uri=server).tracking_uri == server
    monkeypatch.setenv(JOB_ENV, "{}")
    with pytest.raises(SweepConfigError, match=r"loggers\.0\.tracking_uri: 'mlruns' is a relative"):
        _sweep(tmp_path, [{"name": "mlflow", "tracking_uri": "mlruns"}], storage=str(tmp_path))
