"""Runs (or resumes, or extends) one sweep: Ray Tune trials, Optuna's multi-objective search,
Parquet out.

Before Ray starts, a run checks what it can: a relative storage path under ``ray job
submit`` is refused (the job's working directory vanishes), the storage must be writable,
one driver holds the sweep's lock (``sweeps.lock``), the settings must match the ones the
sweep was started with (``sweeps.state``; a larger ``num_trials`` extends it), damaged
result files are set aside, and the Optuna study is checked and reconciled with the rows
(``sweeps.study``). After Ray starts, a sweep whose trials need more than any node has
fails before the first trial. Each run is a new Tune experiment under ``ray/`` (``<sweep>``,
then ``<sweep>-2``, ...) with the remaining budget; nothing is restored from Ray's files.

The traps of Ray 2.60 / Optuna 5 handled here: metric and mode live only on the searcher
(anything in TuneConfig makes the search single-objective); every report carries every
objective (the trainable fills missing ones); early-stopped trials are told to Optuna as
PRUNED; the scheduler's time is the trial's own ``epoch``; storage paths are made absolute.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.fs as pafs
import ray
from optuna.storages import BaseStorage
from ray import tune

from search_spaces import SearchSpace
from sweeps.config import Resources, SweepConfig
from sweeps.lock import SweepLockedError, driver_lock
from sweeps.progress import ProgressPrinter, TrialNames, front_text
from sweeps.schedulers import MultiObjectiveASHA
from sweeps.sink import ParquetSink, param_types
from sweeps.state import SweepChangedError, check_or_record, remove_sweep
from sweeps.study import (
    OPTUNA_FILES,
    ParetoOptunaSearch,
    StudyDamagedError,
    build_sampler,
    minimums,
    open_study,
    reconcile,
    repair_journal,
    study_storage,
)
from sweeps.teachers import prepare_teachers
from sweeps.trackers import JOB_ENV
from sweeps.trackers import callbacks as tracker_callbacks
from trainables.config import TrainConfig
from trainables.results import (
    COMPLETED,
    DamagedFileWarning,
    StorageError,
    SweepLocation,
    SweepWriter,
    absolute_storage,
    full_budget,
    read_sweep,
)
from trainables.results.storage import check_writable, is_uri
from trainables.tune import run_trial, stopping_metrics

DRIVER_CPUS = 1  # a DDP trial's own process: it drives the Ray Train run of its workers
#: Tune's switch between its new output engine (1) and the legacy one (0, silent at verbose 0).
TUNE_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"
#: Set to 1: Tune adds no logger callbacks of its own (``sweeps.trackers.callbacks`` does).
TUNE_AUTO_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
#: Skips the resource check, for autoscaling clusters whose nodes start on demand.
SKIP_RESOURCE_CHECK = "CERTSWEEP_SKIP_RESOURCE_CHECK"


class SweepResourcesError(RuntimeError):
    """The cluster cannot run one trial of the sweep; the message says what it lacks."""


#: Errors that stop a run before any trial, with a message for the user.
START_ERRORS = (
    SweepLockedError,
    SweepChangedError,
    StorageError,
    StudyDamagedError,
    SweepResourcesError,
)


@dataclass(frozen=True)
class SweepOutcome:
    """Where the results are, how many trials the sweep has and how many completed."""

    results: str
    trials: int
    completed: int


def check_job_storage(storage: str) -> None:
    """Under ``ray job submit`` a relative storage path would point into the job's
    temporary working directory: refuse it, naming the key."""
    if (
        JOB_ENV in os.environ
        and not is_uri(storage)
        and not Path(storage).expanduser().is_absolute()
    ):
        raise StorageError(
            f"storage {storage!r} (key 'storage' or --storage) is relative: under ray job"
            " submit it would land in the job's temporary working directory and vanish;"
            " give an absolute path on a filesystem every node shares, or a URI (s3://...)"
        )


def trial_resources(per: Resources) -> dict[str, float]:
    """What Tune reserves for a trial: its worker's, or a DDP trial's Train driver's alone.

    A DDP trial's workers live in Ray Train's own placement group, unseen by Tune; its driver
    only waits on them, and must hold no GPU.
    """
    if per.workers > 1:
        return {"cpu": DRIVER_CPUS, "gpu": 0}
    return {"cpu": per.cpus_per_worker, "gpu": per.gpus_per_worker}


def check_resources(sweep: SweepConfig) -> None:
    """Fail before any trial when no node can hold one worker of a trial, or the cluster
    cannot hold a whole trial (``SweepResourcesError`` says what was asked and what is
    there). ``$CERTSWEEP_SKIP_RESOURCE_CHECK`` skips it (autoscaling clusters)."""
    if os.environ.get(SKIP_RESOURCE_CHECK):
        return
    per = sweep.resources
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    fits = any(
        node.get("CPU", 0) >= per.cpus_per_worker and node.get("GPU", 0) >= per.gpus_per_worker
        for node in nodes
    )
    total = ray.cluster_resources()
    need_cpu = per.cpus_per_worker * per.workers + (DRIVER_CPUS if per.workers > 1 else 0)
    need_gpu = per.gpus_per_worker * per.workers
    if fits and total.get("CPU", 0) >= need_cpu and total.get("GPU", 0) >= need_gpu:
        return
    largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    raise SweepResourcesError(
        f"each trial asks for {per.workers} worker(s) of {per.cpus_per_worker:g} CPU(s) and"
        f" {per.gpus_per_worker:g} GPU(s) (key 'resources'; {need_cpu:g} CPUs and"
        f" {need_gpu:g} GPUs in all), but the cluster has {len(nodes)} node(s) with"
        f" {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs in all (the largest"
        f" node: {largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs): no trial"
        f" could start. On an autoscaling cluster set {SKIP_RESOURCE_CHECK}=1."
    )


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


def build_scheduler(sweep: SweepConfig, training: TrainConfig):
    """The early-stopping scheduler, on per-epoch metrics: an objective measured only at the
    end (``val_final_cert_acc``) is replaced by its stand-in (``tune.stopping_metrics``)."""
    stopping = sweep.early_stopping
    objectives = {o.metric: o.mode for o in sweep.objectives}
    metrics = stopping_metrics(objectives, training.eval.split)
    total_epochs = training.epochs
    if stopping.kind == "mo-asha":
        return MultiObjectiveASHA(
            metrics=list(metrics),
            modes=list(metrics.values()),
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


def directions(sweep: SweepConfig) -> list[str]:
    """The objectives' modes as Optuna and the analysis name them."""
    return [{"max": "maximize", "min": "minimize"}[o.mode] for o in sweep.objectives]


def _experiment_name(sweep: SweepConfig, location: SweepLocation) -> tuple[int, str]:
    """This run's number and its Tune experiment's name (``<sweep>``, ``<sweep>-2``, ...)."""
    runs = 1
    if location.exists("ray"):
        infos = location.filesystem.get_file_info(pafs.FileSelector(f"{location.path}/ray"))
        runs += sum(info.type == pafs.FileType.Directory for info in infos)
    return runs, sweep.name if runs == 1 else f"{sweep.name}-{runs}"


def _prepare_study(
    sweep: SweepConfig, space: SearchSpace, results: str, rows: pd.DataFrame
) -> BaseStorage:
    """The study's storage, checked (a journal repaired) and reconciled with the rows."""
    if sweep.optuna_storage == "none":
        where = "memory"
    else:
        where = f"{results}/{OPTUNA_FILES[sweep.optuna_storage]}"
    if sweep.optuna_storage == "journal":
        repaired = repair_journal(Path(where.removeprefix("file://")))
        if repaired:
            print(f"repaired the Optuna journal: {repaired}", flush=True)
    storage = study_storage(sweep, results)
    done = reconcile(open_study(sweep, storage, where), rows, space, sweep)
    if done.added or done.told or done.rerun:
        print(
            f"study in {where}: {done.added} trial(s) added from the Parquet rows, {done.told}"
            f" told their end, {done.rerun} cut-off trial(s) queued to run again",
            flush=True,
        )
    return storage


def run_sweep(
    sweep: SweepConfig,
    *,
    config_source: str = "",
    fresh: bool = False,
    verbose: bool = False,
    num_cpus: int | None = None,
    break_lock: bool = False,
) -> SweepOutcome:
    """Run, resume or extend ``sweep`` (see the module docstring); ``START_ERRORS`` stop it
    before any trial. ``fresh`` first removes the sweep's results (and says what)."""
    check_job_storage(sweep.storage)
    storage = absolute_storage(sweep.storage)
    check_writable(storage, sweep.name)
    location = SweepLocation.of(storage, sweep.name)
    results = f"{storage}/{sweep.name}"
    space = sweep.search_space(config_source or "the sweep config")
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    with driver_lock(storage, sweep.name, break_lock=break_lock):
        if fresh:
            removed = remove_sweep(location)
            print(f"--fresh: removed from {results}: {', '.join(removed) or 'nothing'}", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DamagedFileWarning)  # said below
            found = read_sweep(location, set_aside_damaged=True)
        for path in found.damaged:
            lost = "its trial runs again" if "/trials/" in path else "its epoch rows are lost"
            print(f"set aside a damaged results file: {path} ({lost})", flush=True)
        rows = found.trials
        resuming = check_or_record(location, sweep, space, len(rows), code_version())
        remaining = sweep.num_trials - len(rows)
        if resuming:
            print(
                f"resuming sweep {sweep.name!r}: {len(rows)} of {sweep.num_trials} trials"
                f" finished, {max(remaining, 0)} to run",
                flush=True,
            )
        optuna_store = _prepare_study(sweep, space, results, rows)
        if remaining > 0:
            _run_trials(sweep, space, location, rows, optuna_store, remaining, verbose, num_cpus)
        trials = read_sweep(location, epochs=False).trials
    completed = int((trials["status"] == COMPLETED).sum())
    print(front_text(trials, [o.metric for o in sweep.objectives], directions(sweep)), flush=True)
    print(f"results (Parquet): {results}/trials and {results}/epochs", flush=True)
    if completed and (remaining > 0 or not location.exists("report/index.html")):
        write_report(results, sweep)
    elif completed:
        print(f"report: {results}/report/index.html (nothing new to report)", flush=True)
    return SweepOutcome(results, len(trials), completed)


def _run_trials(
    sweep: SweepConfig,
    space: SearchSpace,
    location: SweepLocation,
    rows: pd.DataFrame,
    storage: BaseStorage,
    remaining: int,
    verbose: bool,
    num_cpus: int | None,
) -> None:
    """Start (or join) Ray, run the teacher stage, then ``remaining`` trials."""
    results = location.uri
    ensure_ray(num_cpus, verbose=verbose)
    check_resources(sweep)
    prepare_teachers(sweep, space)
    training = sweep.training_config()
    objectives = {o.metric: o.mode for o in sweep.objectives}
    per = sweep.resources
    run, experiment = _experiment_name(sweep, location)
    names = TrialNames(sweep.name, experiment, searcher=None)
    searcher = ParetoOptunaSearch(
        space=space.define_by_run(),
        metric=list(objectives),
        mode=list(objectives.values()),
        sampler=build_sampler(sweep, run),
        study_name=sweep.name,
        storage=storage,
        total_epochs=training.epochs,
        constraints=minimums(sweep),
        folder_of=names.folder,
    )
    names.searcher = searcher
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            training=sweep.training,
            objectives=objectives,
            results_uri=results,
            devices=per.workers * (per.gpus_per_worker or per.cpus_per_worker),
            workers=per.workers,
            cpus_per_worker=per.cpus_per_worker,
            gpus_per_worker=per.gpus_per_worker,
            verbose=verbose,
        ),
        trial_resources(per),
    )
    writer = SweepWriter(
        location.uri.rpartition("/")[0],
        sweep.name,
        param_types=param_types(space),
        total_epochs=training.epochs,
        objectives=list(objectives),
        code_version=code_version(),
        directions=directions(sweep),
    )
    sink = ParquetSink(writer)
    earlier = rows[full_budget(rows)] if len(rows) else rows
    printer = ProgressPrinter(
        names,
        objectives,
        total_trials=sweep.num_trials,
        total_epochs=training.epochs,
        every_s=sweep.report_every_s,
        sink=sink,
        previous=earlier[list(objectives)].dropna().values.tolist() if len(earlier) else [],
        done=len(rows),
        live=list(stopping_metrics(objectives, training.eval.split)),
    )
    print(f"running {remaining} trial(s) as Tune experiment {experiment!r}", flush=True)
    if not verbose:  # Tune's new output engine prints its banner even when silent
        os.environ[TUNE_NEW_OUTPUT] = "0"
    os.environ[TUNE_AUTO_LOGGERS] = "1"  # TensorBoard files only when loggers ask for them
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=build_scheduler(sweep, training),
            num_samples=remaining,
            max_concurrent_trials=max_concurrent(sweep),
            # A new actor per trial costs seconds (a process importing torch and the
            # project); trials of one sweep share their resources, so reuse them.
            reuse_actors=True,
            trial_name_creator=names.name,
            trial_dirname_creator=names.name,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=f"{results}/ray",
            # The Parquet rows first: the printer reads the status they record.
            callbacks=[
                sink,
                printer,
                *tracker_callbacks(sweep.loggers, sweep.name, experiment, results),
            ],
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            verbose=2 if verbose else 0,
        ),
    )
    tuner.fit()


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


#: Ray's switch that makes a local cluster use the loopback address (its default on macOS
#: and Windows): read by ``ray._private.services.get_node_ip_address`` at each call.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ensure_ray(num_cpus: int | None = None, *, verbose: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (or ray job submit), else start a local one
    that listens on the loopback address only (GCS, raylet, workers, agents)."""
    if ray.is_initialized():
        return
    level = logging.INFO if verbose else logging.WARNING
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=level)
        return
    os.environ[LOOPBACK_ENV] = "0"  # for the processes the local cluster starts
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # for this one, which imported Ray already
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=level)
