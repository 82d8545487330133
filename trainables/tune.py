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
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from trainables.config import load_config
from trainables.training.callbacks import Callback
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

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        report = self.finite_objectives(metrics)
        report.update(status="running", device_hours=self.device_hours())
        self.last = report
        saved = None if checkpoint is None else tune.Checkpoint.from_directory(checkpoint.parent)
        tune.report(report, checkpoint=saved)


def run_trial(
    params: dict[str, Any],
    *,
    training: dict[str, Any],
    objectives: dict[str, str],
    results_uri: str,
    devices: float = 1.0,
) -> None:
    """Tune function trainable (bind the keyword arguments with ``tune.with_parameters``)."""
    context = tune.get_context()
    trial_id = context.get_trial_id()
    workdir = Path(tempfile.mkdtemp(prefix=f"certsweep-{trial_id}-"))
    try:
        restored = tune.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as directory:
                shutil.copy(Path(directory) / CHECKPOINT_NAME, workdir / CHECKPOINT_NAME)
        config = load_config(training, {**params, "checkpoint.dir": str(workdir)})
        reporter = _Reporter(objectives, devices)
        result = train(config, [reporter])
        final = _final_report(result, reporter, config.seed)
        final["checkpoint_uri"] = _upload(result, results_uri, trial_id)
        tune.report(final)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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
