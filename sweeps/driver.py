"""Runs (or resumes) one sweep: Ray Tune trials, Optuna's multi-objective search, Parquet out.

The traps of Ray 2.60 / Optuna 5 this handles (see shared/notes/ray-optuna.md): metric and
mode live only on the searcher (anything in TuneConfig makes the search single-objective);
every report carries every objective (the trainable fills missing ones); early-stopped trials
are told to Optuna as PRUNED, not COMPLETE; the scheduler's time is the trial's own ``epoch``;
relative storage paths are made absolute (``ray job submit`` runs in a temporary copy); an
existing experiment is restored with ``Tuner.restore(..., resume_errored=True)``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from analysis.pareto import pareto_front
from sweeps.config import SweepConfig
from sweeps.results import ParquetSink, read_trials
from sweeps.schedulers import MultiObjectiveASHA
from trainables.tune import run_trial

EXPERIMENT = "ray"  # Ray's own experiment folder inside <storage>/<sweep>/


def resolve_storage(storage: str) -> str:
    """URIs stay as they are; local paths become absolute (job submission changes the cwd)."""
    if "://" in storage:
        return storage.rstrip("/")
    return str(Path(storage).expanduser().resolve())


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch that tells early-stopped trials as PRUNED and records constraints.

    Ray's OptunaSearch tells Optuna the last result of every finished trial as COMPLETE, so
    a trial stopped after one epoch would enter the front and the sampler with low-budget
    values. A trial that reports fewer than ``total_epochs`` epochs (and did not diverge) is
    told as PRUNED. Constraint values (``min - metric``, feasible when <= 0) are stored as the
    user attribute the samplers' ``constraints_func`` reads.
    """

    def __init__(self, *args: Any, total_epochs: int, constraints: dict[str, float], **kwargs):
        super().__init__(*args, **kwargs)
        self.total_epochs, self.constraints = total_epochs, constraints

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result and trial_id in self._ot_trials and self.constraints:
            values = [low - float(result.get(m, 0.0)) for m, low in self.constraints.items()]
            self._ot_trials[trial_id].set_user_attr("constraints", values)
        stopped_early = (
            result is not None
            and result.get("status") != "diverged"
            and int(result.get("epoch", 0)) < self.total_epochs
        )
        super().on_trial_complete(trial_id, None if stopped_early else result, error)


def constraint_values(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs.get("constraints", [0.0])


def build_sampler(sweep: SweepConfig) -> optuna.samplers.BaseSampler:
    seed = sweep.sampler.seed
    constraints = constraint_values if sweep.constraints else None
    name = sweep.sampler.name
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, constraints_func=constraints)
    return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)


def build_scheduler(sweep: SweepConfig, total_epochs: int):
    stopping = sweep.early_stopping
    metrics = [o.metric for o in sweep.objectives]
    modes = [o.mode for o in sweep.objectives]
    if stopping.kind == "mo-asha":
        return MultiObjectiveASHA(
            metrics=metrics,
            modes=modes,
            time_attr="epoch",
            max_t=total_epochs,
            grace_period=stopping.grace_period,
            reduction_factor=stopping.reduction_factor,
        )
    if stopping.kind == "asha":  # on the scalarised score the trainable reports
        return tune.schedulers.ASHAScheduler(
            metric="score",
            mode="max",
            time_attr="epoch",
            max_t=total_epochs,
            grace_period=stopping.grace_period,
            reduction_factor=stopping.reduction_factor,
        )
    return None


def max_concurrent(sweep: SweepConfig) -> int:
    """Trials that fit at once: GPUs // GPUs per trial, else CPUs // CPUs per trial."""
    if sweep.max_concurrent is not None:
        return sweep.max_concurrent
    resources, per = ray.cluster_resources(), sweep.resources
    if per.gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // (per.gpus_per_worker * per.workers)))
    return max(1, int(resources.get("CPU", 1) // (per.cpus_per_worker * per.workers)))


class FrontPrinter(tune.Callback):
    """Prints the current Pareto front of finished trials every ``every_s`` seconds."""

    def __init__(self, storage: str, sweep: SweepConfig) -> None:
        self.storage, self.sweep, self.every_s = storage, sweep, sweep.report_every_s
        self.last = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            print(front_table(self.storage, self.sweep), flush=True)


def front_table(storage: str, sweep: SweepConfig, top: int = 10) -> str:
    """The Pareto front of the completed trials as a text table."""
    trials = read_trials(storage, sweep.name)
    if trials.empty:
        return "no finished trials yet"
    done = trials[trials["status"] == "completed"]
    objectives = [o.metric for o in sweep.objectives]
    directions = ["maximize" if o.mode == "max" else "minimize" for o in sweep.objectives]
    if done.empty:
        return f"{len(trials)} trial(s) finished, none completed"
    front = done[pareto_front(done, objectives, directions)["on_front"]]
    params = [c for c in front.columns if c.startswith("param.") and front[c].notna().any()]
    tests = [c for c in ("test_clean_acc", "test_cert_acc") if c in front.columns]
    shown = front[["trial_id", *objectives, *tests, *params]].sort_values(objectives[0])
    counts = trials["status"].value_counts().to_dict()
    header = f"Pareto front ({len(front)} of {len(trials)} trials; {counts}):"
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        return f"{header}\n{shown.head(top).to_string(index=False, float_format='%.4f')}"


def run_sweep(sweep: SweepConfig, *, config_source: str = "") -> str:
    """Run or resume ``sweep``; returns the results location ``<storage>/<sweep>``."""
    storage = resolve_storage(sweep.storage)
    results = f"{storage}/{sweep.name}"
    training = sweep.training_config()
    space = sweep.search_space(config_source or "the sweep config")
    objectives = {o.metric: o.mode for o in sweep.objectives}
    per = sweep.resources
    if per.workers > 1:
        raise NotImplementedError(
            "resources.workers > 1 (DDP trials through Ray Train) is not supported yet"
        )
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            training=sweep.training,
            objectives=objectives,
            results_uri=results,
            devices=per.gpus_per_worker or per.cpus_per_worker,
        ),
        {"cpu": per.cpus_per_worker, "gpu": per.gpus_per_worker},
    )
    sink = ParquetSink(
        storage, sweep.name, space, training.epochs, list(objectives), code_version()
    )
    callbacks = [sink, FrontPrinter(storage, sweep)]
    experiment = f"{results}/{EXPERIMENT}"
    if tune.Tuner.can_restore(experiment):
        print(f"resuming sweep {sweep.name!r} from {experiment}", flush=True)
        tuner = tune.Tuner.restore(
            experiment, trainable=trainable, resume_errored=True, restart_errored=False
        )
    else:
        searcher = ParetoOptunaSearch(
            space=space.define_by_run(),
            metric=list(objectives),
            mode=list(objectives.values()),
            sampler=build_sampler(sweep),
            study_name=sweep.name,
            total_epochs=training.epochs,
            constraints={c.metric: c.min for c in sweep.constraints},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=build_scheduler(sweep, training.epochs),
                num_samples=sweep.num_trials,
                max_concurrent_trials=max_concurrent(sweep),
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT,
                storage_path=results,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                verbose=1,
            ),
        )
    tuner.fit()
    print(front_table(storage, sweep), flush=True)
    print(f"results (Parquet): {results}/trials and {results}/epochs", flush=True)
    return results


def code_version() -> str:
    """The installed certsweep version plus the git commit when run from a checkout."""
    from importlib.metadata import version

    head = Path(__file__).parents[1] / ".git" / "HEAD"
    commit = ""
    if head.is_file():
        ref = head.read_text().strip()
        target = head.parent / ref[5:] if ref.startswith("ref: ") else None
        commit = target.read_text().strip()[:12] if target and target.is_file() else ref[:12]
    return f"{version('certsweep')}+{commit}" if commit else version("certsweep")


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (or ray job submit), else start a local one."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
