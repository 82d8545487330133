"""The Ray Tune function trainable: one sweep trial = one run of the training loop.

The only Ray-aware module under ``trainables``. A trial's config holds the sampled search
parameters (flat, dotted training-config keys); the sweep's fixed training settings come in
through ``tune.with_parameters``. Every epoch the trial reports the loop's metrics with every
objective present and finite, and its own ``epoch`` (schedulers use it: Ray's
``training_iteration`` restarts after a restore), plus the loop's checkpoint directory, so a
retried trial resumes from its last epoch. An objective the epoch did not evaluate carries
the last value evaluated; a NaN, or an objective not evaluated yet, becomes its worst value,
and ``nan_reason`` says so in that epoch and in every later one that carries it. The last
epoch is reported once, in the final report, with the final (test-split) metrics, the
status, the full epoch history and the URI of the final checkpoint, copied atomically to
``<results>/checkpoints/<trial_id>/``: a scheduler that stops a trial when it reaches its
budget (Ray's ASHA does) would otherwise stop it before its final metrics.

An objective measured only at the end (``FINAL_ONLY``: ``val_final_cert_acc``, the final
verifier's certificate of the validation split) is None in every epoch report: Tune needs
the key, and no value from another verifier may stand under its name. Early stopping
compares unfinished trials on its per-epoch stand-in instead (``stopping_metrics``:
``<eval.split>_cert_acc``, from ``eval.verifier``), which every report carries like an
objective, and the scalarised ``score`` (plain ASHA's metric) is taken over those. A trial
stopped early thus never has a value for it: Optuna is told PRUNED
(``sweeps.study.ParetoOptunaSearch``) and its row holds null.

Errors that a retry cannot fix (a bad config, a missing dataset or teacher, a checkpoint of
another model) end the trial at once with a ``failed`` report naming the error, instead of
raising: Tune would retry the trial ``max_failures`` times for nothing.

A trial that re-runs the configuration of a trial cut off by a killed driver gets the
folders of that trial's checkpoints (``RESUME_KEY`` in its config) and resumes from the
newest one that loads.

A single-worker trial runs the loop in the trial process (a Ray Train run costs ~20 s of
fixed overhead). A trial with ``workers`` > 1 is a Ray Train "driver": it runs a
``TorchTrainer`` whose workers all run the loop under DDP (Train initialises
torch.distributed). Every worker reports every epoch to Train (``ray.train.report`` is a
barrier; the loop's metrics are already all-reduced) and only rank 0 attaches its checkpoint;
``TuneReportCallback`` forwards rank 0's reports, the final one included, to Tune. Tune holds
no checkpoint of such a trial: Train keeps its own under ``<results>/train/`` in a run named
after the trial, so a restarted trial resumes from Train's latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray.train
from ray import tune

from trainables.checkpoints import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from trainables.config import ConfigError, TrainConfig, load_config
from trainables.data import DatasetNotFoundError
from trainables.results.schema import FINAL_VAL_CERT
from trainables.results.storage import copy_atomic, open_storage
from trainables.results.writing import ERROR_CHARS
from trainables.teachers import TeacherError
from trainables.training.callbacks import RunInfo, TrainingCallback
from trainables.training.loop import RunResult, train
from trainables.training.teacher_cache import ensure_teacher

#: Config key of a trial that re-runs a cut-off trial: folders (under the results) that
#: hold its Tune checkpoints, newest first. Not a training setting: the trial removes it.
RESUME_KEY = "_resume_from"
#: Errors a retry cannot fix: the trial fails at once (see the module docstring).
DETERMINISTIC_ERRORS = (ConfigError, DatasetNotFoundError, TeacherError, CheckpointError)
#: Objectives measured once, at the end of a full-budget trial -> the per-epoch metric (of
#: ``eval.split``, without the split) that stands in for them in early stopping.
FINAL_ONLY = {FINAL_VAL_CERT: "cert_acc"}


def provenance(config: TrainConfig) -> dict[str, Any]:
    """What produced the certified metrics (``trainables.results.PROVENANCE_COLUMNS``), in
    every report: ``<eval_split>_cert_acc`` per epoch with ``eval_verifier``, the final
    ``<final_split>_cert_acc`` and ``val_final_cert_acc`` with ``final_verifier``, all at
    the L-inf radius ``cert_eps``."""
    ev = config.eval
    return {
        "eval_verifier": ev.verifier,
        "eval_split": ev.split,
        "final_verifier": ev.final_verifier,
        "final_split": ev.final_split,
        "cert_eps": config.eval_eps,
    }


def stopping_metrics(objectives: dict[str, str], eval_split: str) -> dict[str, str]:
    """The metrics schedulers compare unfinished trials on: the objectives, each final-only
    one replaced by its per-epoch stand-in (``val_final_cert_acc`` -> ``<eval_split>_cert_acc``,
    once even when that is an objective too)."""
    metrics: dict[str, str] = {}
    for name, mode in objectives.items():
        stand_in = f"{eval_split}_{FINAL_ONLY[name]}" if name in FINAL_ONLY else name
        metrics.setdefault(stand_in, mode)
    return metrics


def worst_value(mode: str) -> float:
    """The value an objective takes when it is missing or not finite (accuracies: 0)."""
    return 0.0 if mode == "max" else math.inf


def scalarised(values: dict[str, float], objectives: dict[str, str]) -> float:
    """The objectives as one number for single-metric schedulers (plain ASHA): the mean of
    the maximised ones minus the minimised ones."""
    signed = [values[name] if mode == "max" else -values[name] for name, mode in objectives.items()]
    return sum(signed) / len(signed)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Reporter(TrainingCallback):
    """Turns the loop's epoch metrics into ``tune.report`` calls (see the module docstring)."""

    def __init__(
        self,
        objectives: dict[str, str],
        devices: float,
        provenance: dict[str, Any],
        eval_split: str = "val",
    ) -> None:
        self.objectives, self.devices, self.provenance = objectives, devices, provenance
        self.stopping = stopping_metrics(objectives, eval_split)
        self.started = time.monotonic()
        #: objective -> (value, why it was replaced or None): what later epochs carry
        self.carried: dict[str, tuple[float, str | None]] = {}
        self.is_main, self.epochs = True, 0

    def on_train_begin(self, info: RunInfo) -> None:
        self.is_main, self.epochs = info.is_main, info.epochs

    def finite_objectives(self, metrics: dict[str, Any], *, final: bool = False) -> dict[str, Any]:
        """``metrics`` with every objective and stopping metric finite (the final-only
        objectives: None in an epoch report, see the module docstring) and ``score``."""
        report, reasons = dict(metrics), []
        epoch = metrics.get("epoch", "?")
        for name, mode in {**self.stopping, **self.objectives}.items():
            if name in FINAL_ONLY and not final:
                report[name] = None
                continue
            if name in metrics:
                value, reason = metrics[name], None
                if not _finite(value):
                    reason = f"{name}={value!r} in epoch {epoch} replaced by {worst_value(mode)}"
                    value = worst_value(mode)
                self.carried[name] = (value, reason)
            elif name in self.carried:
                value, reason = self.carried[name]
            else:
                value = worst_value(mode)
                reason = f"{name} not evaluated by epoch {epoch}: {value} until it is"
            report[name] = value
            if reason:
                reasons.append(reason)
        if reasons:
            report["nan_reason"] = "; ".join(reasons)
        report["score"] = scalarised(report, self.stopping)
        report.update(self.provenance)
        return report

    def device_hours(self) -> float:
        return (time.monotonic() - self.started) / 3600 * self.devices

    def epoch_report(self, metrics: dict[str, Any]) -> dict[str, Any]:
        report = self.finite_objectives(metrics)
        report.update(status="running", device_hours=self.device_hours())
        return report

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        if metrics.get("epoch") != self.epochs:  # the last one goes with the final report
            self.report(self.epoch_report(metrics), checkpoint)

    def report(self, report: dict[str, Any], checkpoint: Path | None) -> None:
        saved = None if checkpoint is None else tune.Checkpoint.from_directory(checkpoint.parent)
        tune.report(report, checkpoint=saved)


class _TrainReporter(_Reporter):
    """Reports to Ray Train on every worker; only rank 0 wrote the checkpoint it attaches."""

    def report(self, report: dict[str, Any], checkpoint: Path | None) -> None:
        saved = None
        if checkpoint is not None and self.is_main:
            saved = ray.train.Checkpoint.from_directory(checkpoint.parent)
        ray.train.report(report, checkpoint=saved)


@dataclass(frozen=True)
class _TrialRun:
    """What the loop of one trial needs, in the trial process or on each Train worker."""

    params: dict[str, Any]
    training: dict[str, Any]
    objectives: dict[str, str]
    results_uri: str
    devices: float
    trial_id: str
    resume_from: tuple[str, ...] = ()

    def train(self, restored: ray.train.Checkpoint | None, reporter_type: type[_Reporter]) -> None:
        """Run the loop (resumed from ``restored``) in a fresh work dir; report its end."""
        workdir = Path(tempfile.mkdtemp(prefix=f"certsweep-{self.trial_id}-"))
        try:
            if restored is not None:
                with restored.as_directory() as directory:
                    shutil.copy(Path(directory) / CHECKPOINT_NAME, workdir / CHECKPOINT_NAME)
            elif self.resume_from:
                _copy_newest_checkpoint(self.results_uri, self.resume_from, workdir)
            config = load_config(self.training, {**self.params, "checkpoint.dir": str(workdir)})
            reporter = reporter_type(
                self.objectives, self.devices, provenance(config), config.eval.split
            )
            result = train(config, [reporter])
            final = _final_report(result, reporter, config.seed)
            if reporter.is_main:  # only rank 0 wrote the checkpoint (and Tune hears rank 0)
                final["checkpoint_uri"] = _upload(result, self.results_uri, self.trial_id)
            reporter.report(final, result.checkpoint)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def run_trial(
    params: dict[str, Any],
    *,
    training: dict[str, Any],
    objectives: dict[str, str],
    results_uri: str,
    devices: float = 1.0,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    verbose: bool = False,
) -> None:
    """Tune function trainable (bind the keyword arguments with ``tune.with_parameters``).

    ``devices`` counts the GPUs (else CPUs) of all workers together, for ``device_hours``;
    without ``verbose``, Ray Train's line per checkpoint is left out of the driver's output.
    """
    if not verbose:
        logging.getLogger("ray.train").setLevel(logging.WARNING)
    trial_id = tune.get_context().get_trial_id()
    params = dict(params)
    resume_from = tuple(params.pop(RESUME_KEY, ()))
    try:
        ensure_teacher(load_config(training, params))  # normally cached by the sweep's first stage
        run = _TrialRun(params, training, objectives, results_uri, devices, trial_id, resume_from)
        if workers == 1:
            run.train(tune.get_checkpoint(), _Reporter)
        else:
            _fit_with_train(run, workers, {"CPU": cpus_per_worker, "GPU": gpus_per_worker})
    except DETERMINISTIC_ERRORS:
        tune.report(_failed_report(objectives, traceback.format_exc()))


def _failed_report(objectives: dict[str, str], error: str) -> dict[str, Any]:
    """The last report of a trial that cannot go on: status ``failed`` and the error."""
    values = {name: worst_value(mode) for name, mode in objectives.items()}
    return {
        **values,
        "score": scalarised(values, objectives),
        "status": "failed",
        "error": error[-ERROR_CHARS:],
        "nan_reason": "the trial failed: its objectives are worst values",
        "epoch": 0,
    }


def _copy_newest_checkpoint(results_uri: str, folders: Sequence[str], workdir: Path) -> None:
    """Copy the newest loadable Tune checkpoint of ``folders`` (under the results) into
    ``workdir``; nothing when none loads (the trial then starts from epoch 0)."""
    filesystem, root = open_storage(results_uri)
    for folder in folders:
        selector = pafs.FileSelector(f"{root}/{folder}", allow_not_found=True)
        found = [i.path for i in filesystem.get_file_info(selector) if "checkpoint_" in i.base_name]
        for directory in sorted(found, reverse=True):
            target = workdir / CHECKPOINT_NAME
            try:
                with filesystem.open_input_stream(f"{directory}/{CHECKPOINT_NAME}") as stream:
                    target.write_bytes(stream.readall())
                load_checkpoint(target)
            except (OSError, CheckpointError):
                target.unlink(missing_ok=True)
                continue
            return


def _fit_with_train(run: _TrialRun, workers: int, per_worker: dict[str, float]) -> None:
    """Run the loop on ``workers`` DDP processes with Ray Train, forwarding reports to Tune.

    Train reserves the workers in its own placement group (Tune does not see it) and names
    the run after the trial, without a timestamp, so that it resumes itself when Tune
    restarts the trial; it keeps only its latest checkpoint (the final one is uploaded).
    """
    from ray.train.torch import TorchTrainer  # ~1.4 s to import: only DDP trials pay it
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"run": run},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=per_worker["GPU"] > 0,
            resources_per_worker=per_worker,
        ),
        run_config=ray.train.RunConfig(
            name=f"train-trial_id={run.trial_id}",
            storage_path=f"{run.results_uri.rstrip('/')}/train",
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def _train_worker(loop_config: dict[str, Any]) -> None:
    """The Train loop function, on every worker; the final report is a barrier like the rest."""
    run: _TrialRun = loop_config["run"]
    run.train(ray.train.get_checkpoint(), _TrainReporter)


def _final_report(result: RunResult, reporter: _Reporter, seed: int) -> dict[str, Any]:
    last_epoch = result.history[-1] if result.history else {}
    report = reporter.finite_objectives({**last_epoch, **result.final}, final=True)
    report.update(
        status=result.status,
        seed=seed,
        device_hours=reporter.device_hours(),
        wall_time_s=time.monotonic() - reporter.started,
        history_json=json.dumps(result.history),
        epoch=result.epochs_completed,
    )
    if result.status == "diverged":
        report["nan_reason"] = f"loss became non-finite in epoch {result.diverged_epoch}"
        report.update({name: worst_value(mode) for name, mode in reporter.objectives.items()})
    return report


def _upload(result: RunResult, results_uri: str, trial_id: str) -> str | None:
    """Copy the final checkpoint next to the sweep's results, atomically; returns its URI."""
    if result.checkpoint is None:
        return None
    filesystem, root = open_storage(results_uri)
    copy_atomic(result.checkpoint, filesystem, f"{root}/checkpoints/{trial_id}", CHECKPOINT_NAME)
    return f"{results_uri.rstrip('/')}/checkpoints/{trial_id}/{CHECKPOINT_NAME}"
