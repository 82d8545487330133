"""A DDP trial: the Tune trial drives a Ray Train run of two workers and reports like any trial.

Two cores here: the trial's driver takes one CPU and each worker half of one, so one trial
fits exactly (two one-CPU workers would starve). Train's fixed overhead makes this ~30-60 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
from sweep_helpers import write_short_demo

from sweeps.config import load_sweep
from sweeps.driver import max_concurrent, run_sweep
from trainables.data import load_dataset
from trainables.results import read_trials
from trainables.tune import FINAL_ONLY


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _tune_reports(results: str) -> list[dict]:
    """Every result the trial reported to Tune, as Tune recorded it (one trial)."""
    (path,) = Path(results, "ray", "demo").glob("*/result.json")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_ddp_trial_reports_rank_zeros_all_reduced_metrics(tmp_path, local_ray) -> None:
    resources = {"workers": 2, "cpus_per_worker": 0.5}
    path = write_short_demo(tmp_path, storage=str(tmp_path), num_trials=1, resources=resources)
    sweep = load_sweep(path)
    assert max_concurrent(sweep) == 1  # the driver's CPU counts: 2 // (1 + 2 * 0.5)
    results = run_sweep(sweep).results

    (row,) = read_trials(str(tmp_path), "demo").to_dict("records")
    assert row["status"] == "completed" and row["epochs_run"] == 2
    assert 0 <= row["test_cert_acc"] <= 1
    assert Path(row["checkpoint_uri"]).is_file()
    assert list(Path(results, "train").glob(f"train-trial_id={row['trial_id']}/checkpoint_*"))

    *epochs, final = _tune_reports(results)  # the last epoch comes with the final report
    history = json.loads(final["history_json"])  # what rank 0's loop computed
    assert [r["epoch"] for r in epochs] == [1] and len(history) == 2
    for report, computed in zip(epochs, history[:1], strict=True):
        assert {k: report[k] for k in computed} == computed
    assert {k: final[k] for k in history[-1]} == history[-1]
    objectives = [o.metric for o in sweep.objectives]
    assert all(0 <= final[name] <= 1 for name in objectives)  # val_final_cert_acc: all ranks'
    per_epoch = [name for name in objectives if name not in FINAL_ONLY]
    assert all(0 <= r[name] <= 1 for r in epochs for name in per_epoch)
    assert all(r[name] is None for r in epochs for name in FINAL_ONLY)  # at the end only

    val_size = sweep.training_config().dataset.val_size
    train = load_dataset("digits", val_size=val_size, seed=int(row["seed"])).train
    for computed in history:  # examples seen summed over both ranks, not rank 0's half
        seen = computed["examples_per_second"] * computed["seconds"]
        assert round(seen) == len(train) // 2 * 2
