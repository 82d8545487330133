"""The Ray Tune function trainable: one sweep trial = one run of the training loop.

The only Ray-aware module under ``trainables``. A trial's config holds the sampled search
parameters (flat, dotted training-config keys); the sweep's fixed training settings come in
through ``tune.with_parameters``. Every epoch the trial reports the loop's metrics with every
objective present and finite (a NaN or a not-yet-evaluated objective is replaced by its
worst value, and ``nan_reason`` says why) and its own ``epoch`` (schedulers use it: Ray's
``training_iteration`` restarts after a restore), plus the loop's checkpoint directory, so a
retried or restored trial resumes from its last epoch. The last report adds the final
(test-split) metrics, the status, the full epoch history and the URI of the final checkpoint
copied to ``<results>/checkpoints/<trial_id>/``.

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
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray.train
from ray import tune

from trainables.config import load_config
from trainables.teachers.cache import ensure_teacher
from trainables.training.callbacks import Callback, RunInfo
from trainables.training.checkpoint import CHECKPOINT_NAME
from trainables.training.loop import RunResult, train


def worst_value(mode: str) -> float:
    """The value an objective takes when it is missing or not finite (accuracies: 0)."""
    return 0.0 if mode == "max" else math.inf


class _Reporter(Callback):
    """Turns the loop's epoch metrics into ``tune.report`` calls (see the module docstring)."""

    def __init__(self, objectives: dict[str, str], devices: float) -> None:
        self.objectives, self.devices = objectives, devices
        self.started = time.monotonic()
        self.last: dict[str, Any] = {}
        self.is_main = True

    def on_train_begin(self, info: RunInfo) -> None:
        self.is_main = info.is_main

    def finite_objectives(self, metrics: dict[str, Any]) -> dict[str, Any]:
        report, reasons = dict(metrics), []
        for name, mode in self.objectives.items():
            value = report.get(name, self.last.get(name))
            if not isinstance(value, int | float) or not math.isfinite(value):
                reasons.append(f"{name}={value!r} replaced by {worst_value(mode)}")
                value = worst_value(mode)
            report[name] = value
        if reasons:
            report["nan_reason"] = "; ".join(reasons)
        signed = [report[n] if m == "max" else -report[n] for n, m in self.objectives.items()]
        report["score"] = sum(signed) / len(signed)  # scalarised objective for plain ASHA
        return report

    def device_hours(self) -> float:
        return (time.monotonic() - self.started) / 3600 * self.devices

    def epoch_report(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The report of one epoch; remembered, so later epochs can fill in its objectives."""
        report = self.finite_objectives(metrics)
        report.update(status="running", device_hours=self.device_hours())
        self.last = report
        return report

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        saved = None if checkpoint is None else tune.Checkpoint.from_directory(checkpoint.parent)
        tune.report(self.epoch_report(metrics), checkpoint=saved)


class _TrainReporter(_Reporter):
    """Reports to Ray Train on every worker; only rank 0 wrote the checkpoint it attaches."""

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        saved = None
        if checkpoint is not None and self.is_main:
            saved = ray.train.Checkpoint.from_directory(checkpoint.parent)
        ray.train.report(self.epoch_report(metrics), checkpoint=saved)


@dataclass(frozen=True)
class _TrialRun:
    """What the loop of one trial needs, in the trial process or on each Train worker."""

    params: dict[str, Any]
    training: dict[str, Any]
    objectives: dict[str, str]
    results_uri: str
    devices: float
    trial_id: str

    def train(
        self, restored: ray.train.Checkpoint | None, reporter_type: type[_Reporter]
    ) -> dict[str, Any]:
        """Run the loop (resumed from ``restored``) in a fresh work dir; the final report."""
        workdir = Path(tempfile.mkdtemp(prefix=f"certsweep-{self.trial_id}-"))
        try:
            if restored is not None:
                with restored.as_directory() as directory:
                    shutil.copy(Path(directory) / CHECKPOINT_NAME, workdir / CHECKPOINT_NAME)
            config = load_config(self.training, {**self.params, "checkpoint.dir": str(workdir)})
            reporter = reporter_type(self.objectives, self.devices)
            result = train(config, [reporter])
            final = _final_report(result, reporter, config.seed)
            if reporter.is_main:  # only rank 0 wrote the checkpoint (and Tune hears rank 0)
                final["checkpoint_uri"] = _upload(result, self.results_uri, self.trial_id)
            return final
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
) -> None:
    """Tune function trainable (bind the keyword arguments with ``tune.with_parameters``).

    ``devices`` counts the GPUs (else CPUs) of all workers together, for ``device_hours``.
    """
    trial_id = tune.get_context().get_trial_id()
    ensure_teacher(load_config(training, params))  # normally cached by the sweep's first stage
    run = _TrialRun(params, training, objectives, results_uri, devices, trial_id)
    if workers == 1:
        tune.report(run.train(tune.get_checkpoint(), _Reporter))
    else:
        _fit_with_train(run, workers, {"CPU": cpus_per_worker, "GPU": gpus_per_worker})


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
    ray.train.report(run.train(ray.train.get_checkpoint(), _TrainReporter))


def _final_report(result: RunResult, reporter: _Reporter, seed: int) -> dict[str, Any]:
    report = reporter.finite_objectives({**(result.history[-1] if result.history else {})})
    report.update(result.final)
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
    """Copy the final checkpoint next to the sweep's results; returns its URI."""
    if result.checkpoint is None:
        return None
    filesystem, root = pafs.FileSystem.from_uri(results_uri)
    target = f"{root}/checkpoints/{trial_id}/{CHECKPOINT_NAME}"
    filesystem.create_dir(f"{root}/checkpoints/{trial_id}", recursive=True)
    pafs.copy_files(
        str(result.checkpoint),
        target,
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=filesystem,
    )
    return f"{results_uri.rstrip('/')}/checkpoints/{trial_id}/{CHECKPOINT_NAME}"
