"""Runs (or resumes) one sweep: Ray Tune trials, Optuna's multi-objective search, Parquet out.

The traps of Ray 2.60 / Optuna 5 this handles (see shared/notes/ray-optuna.md): metric and
mode live only on the searcher (anything in TuneConfig makes the search single-objective);
every report carries every objective (the trainable fills missing ones); early-stopped trials
are told to Optuna as PRUNED, not COMPLETE; the scheduler's time is the trial's own ``epoch``;
relative storage paths are made absolute (``ray job submit`` runs in a temporary copy); an
existing experiment is restored with ``Tuner.restore(..., resume_errored=True)``, and a trial
that finished after Tune's last state snapshot (taken at most every 10 s) is replayed from its
Parquet row instead of running again.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.search.optuna import OptunaSearch

from analysis.pareto import pareto_front
from sweeps.config import Resources, SweepConfig
from sweeps.results import ParquetSink, read_trials
from sweeps.schedulers import MultiObjectiveASHA
from sweeps.teachers import prepare_teachers
from trainables.tune import run_trial, worst_value

EXPERIMENT = "ray"  # Ray's own experiment folder inside <storage>/<sweep>/
REPLAYED = "replayed"  # result key of a finished trial replayed on resume
DRIVER_CPUS = 1  # a DDP trial's own process: it drives the Ray Train run of its workers


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

    def restore(self, checkpoint_path: str) -> None:
        """Restore Tune's snapshot of the searcher, then close the study's orphans.

        With a durable study, trials asked after the snapshot (before the driver died) stay
        RUNNING in the storage although no Tune trial will ever finish them: told as FAIL,
        they no longer count as pending for the sampler or look alive in Optuna's tools.
        """
        super().restore(checkpoint_path)
        known = {trial.number for trial in self._ot_trials.values()}
        for trial in self._ot_study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
            if trial.number not in known:
                self._ot_study.tell(trial.number, state=TrialState.FAIL)

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


OPTUNA_FILES = {"journal": "optuna.journal", "sqlite": "optuna.sqlite3"}


def optuna_storage(sweep: SweepConfig, results: str, restoring: bool) -> BaseStorage | None:
    """The durable study under the sweep's folder, or None (in memory, pickled by Tune).

    Only a fresh sweep creates one; a resumed sweep's searcher brings its own. A file left
    by a sweep that died before Tune's first snapshot would mix two searches in one study:
    refuse, naming it, rather than append to it or delete it.
    """
    if sweep.optuna_storage == "none" or restoring:
        return None
    path = Path(results.removeprefix("file://")) / OPTUNA_FILES[sweep.optuna_storage]
    if path.exists():
        raise FileExistsError(
            f"{path} holds an Optuna study but {results} has no Tune experiment to resume:"
            " move the file away (or delete it) to start the sweep afresh"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if sweep.optuna_storage == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{path}")
    return JournalStorage(JournalFileBackend(str(path)))


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


def trial_resources(per: Resources) -> dict[str, float]:
    """What Tune reserves for a trial: its worker's, or a DDP trial's Train driver's alone.

    A DDP trial's workers live in Ray Train's own placement group, unseen by Tune; its driver
    only waits on them, and must hold no GPU.
    """
    if per.workers > 1:
        return {"cpu": DRIVER_CPUS, "gpu": 0}
    return {"cpu": per.cpus_per_worker, "gpu": per.gpus_per_worker}


def max_concurrent(sweep: SweepConfig) -> int:
    """Trials that fit at once: CPUs // CPUs per trial and, with GPUs, GPUs // GPUs per trial.

    Tune cannot do this itself for DDP trials (it sees only their drivers): too many trials
    would start drivers whose workers then never get their resources.
    """
    if sweep.max_concurrent is not None:
        return sweep.max_concurrent
    resources, per = ray.cluster_resources(), sweep.resources
    trial_cpus = per.cpus_per_worker * per.workers + (DRIVER_CPUS if per.workers > 1 else 0)
    fits = resources.get("CPU", 1) // trial_cpus
    if per.gpus_per_worker > 0:
        fits = min(fits, resources.get("GPU", 0) // (per.gpus_per_worker * per.workers))
    return max(1, int(fits))


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


def finished_results(storage: str, sweep: SweepConfig) -> dict[str, dict[str, Any]]:
    """Trial id -> the result to replay, for every trial with a finished (not failed) row.

    Tune snapshots its experiment state at most every 10 s, so after a killed driver a trial
    whose row was written after the last snapshot comes back unfinished and would run again
    (and rewrite its row). Its row is the record of how it ended: a restored sweep replays
    it to Tune and Optuna instead, with the objectives and constraint metrics, the epochs run
    (fewer than the budget: told as pruned) and the status.
    """
    trials = read_trials(storage, sweep.name)
    modes = {o.metric: o.mode for o in sweep.objectives}
    modes.update({c.metric: "max" for c in sweep.constraints if c.metric not in modes})
    replays = {}
    for row in trials[trials["status"] != "failed"].to_dict("records"):
        values = {m: float(row.get(m, math.nan)) for m in modes}
        values = {m: v if math.isfinite(v) else worst_value(modes[m]) for m, v in values.items()}
        signed = [values[o.metric] * (1 if o.mode == "max" else -1) for o in sweep.objectives]
        replays[row["trial_id"]] = {
            **values,
            "score": sum(signed) / len(signed),  # as the trainable reports it, for ASHA
            "epoch": int(row["epochs_run"]),
            "status": row["status"],
            REPLAYED: True,
        }
    return replays


def replay_or_run(params: dict[str, Any], *, finished: dict[str, dict], **kwargs: Any) -> None:
    """The trial function: replays a finished trial's recorded end, else runs the trial."""
    replay = finished.get(tune.get_context().get_trial_id())
    if replay is None:
        run_trial(params, **kwargs)
    else:
        tune.report(replay)


class ResumableParquetSink(ParquetSink):
    """Leaves a replayed trial's files as they are: they are the record that was replayed."""

    def write(
        self,
        trial: Trial,
        status: str,
        error: str | None,
        history: Mapping[int, Mapping[str, Any]],
    ) -> None:
        if (trial.last_result or {}).get(REPLAYED):
            self._seen.pop(trial.trial_id, None)
        else:
            super().write(trial, status, error, history)


def run_sweep(sweep: SweepConfig, *, config_source: str = "") -> str:
    """Run or resume ``sweep``; returns the results location ``<storage>/<sweep>``."""
    storage = resolve_storage(sweep.storage)
    results = f"{storage}/{sweep.name}"
    training = sweep.training_config()
    space = sweep.search_space(config_source or "the sweep config")
    objectives = {o.metric: o.mode for o in sweep.objectives}
    per = sweep.resources
    experiment = f"{results}/{EXPERIMENT}"
    restoring = tune.Tuner.can_restore(experiment)
    prepare_teachers(sweep, space)
    trainable = tune.with_resources(
        tune.with_parameters(
            replay_or_run,
            finished=finished_results(storage, sweep) if restoring else {},
            training=sweep.training,
            objectives=objectives,
            results_uri=results,
            devices=per.workers * (per.gpus_per_worker or per.cpus_per_worker),
            workers=per.workers,
            cpus_per_worker=per.cpus_per_worker,
            gpus_per_worker=per.gpus_per_worker,
        ),
        trial_resources(per),
    )
    sink = ResumableParquetSink(
        storage,
        sweep.name,
        space,
        training.epochs,
        list(objectives),
        code_version(),
        directions=directions(sweep),
    )
    callbacks = [sink, FrontPrinter(storage, sweep)]
    if restoring:
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
            storage=optuna_storage(sweep, results, restoring),
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
                # A new actor per trial costs seconds (a process importing torch and the
                # project); trials of one sweep share their resources, so reuse them.
                reuse_actors=True,
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
    write_report(results, sweep)
    return results


def directions(sweep: SweepConfig) -> list[str]:
    """The objectives' modes as Optuna and the analysis name them."""
    return [{"max": "maximize", "min": "minimize"}[o.mode] for o in sweep.objectives]


def write_report(results: str, sweep: SweepConfig) -> None:
    """The analysis report of the finished sweep; a failure costs only the report."""
    from analysis.report import build_report  # matplotlib and fANOVA: only when needed

    try:
        report = build_report(
            results, objectives=[o.metric for o in sweep.objectives], directions=directions(sweep)
        )
    except Exception as err:  # the sweep's results are written; say why the report is not
        print(
            f"no report ({type(err).__name__}: {err}); try: python -m analysis report {results}",
            flush=True,
        )
    else:
        print(f"report: {report.html_path} (python -m analysis report {results})", flush=True)


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
