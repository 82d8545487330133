"""The sweep's first stage: train the recipe teachers its trials can name, before any trial.

Every trial also calls ``ensure_teacher`` (a cached teacher costs a file check), but
training the teachers first means the sweep fails before its trials when a teacher cannot
be trained, trials do not start only to wait on one teacher's file lock, and the driver
shows the teacher's progress. The stage runs as a Ray task with one trial worker's
resources, so a teacher trains on a GPU node of a cluster; trials on other nodes find it
only when ``teacher.cache_dir`` (or ``$CERTSWEEP_TEACHERS``) is a shared filesystem.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray

from search_spaces import CategoricalParam, SearchSpace
from sweeps.config import SweepConfig
from trainables.config import TrainConfig
from trainables.teachers.registry import INHERITED_KEYS, resolve_teacher
from trainables.training.callbacks import RunInfo, TrainingCallback
from trainables.training.teacher_cache import ensure_teacher

TEACHER_KEY = "teacher.name"


def sweep_teachers(sweep: SweepConfig, space: SearchSpace) -> list[str]:
    """Every teacher a trial can name: the fixed one, or the choices of the searched one."""
    searched = space.parameters.get(TEACHER_KEY)
    if isinstance(searched, CategoricalParam):
        names = [str(choice) for choice in searched.choices]
    else:
        names = [sweep.training_config().teacher.name]
    return [name for name in names if name != "none"]


def prepare_teachers(sweep: SweepConfig, space: SearchSpace) -> dict[str, str | None]:
    """Train (or find in the cache) each recipe teacher of the sweep; name -> its file.

    Checkpoint teachers need no training (None). A generic recipe (``pgd-at``,
    ``trades:cnn7``) takes the student's optimiser and schedule: when the space searches
    those, trials train their own teachers, which the stage cannot foresee; it says so.
    """
    per = sweep.resources
    task = ray.remote(num_cpus=per.cpus_per_worker, num_gpus=per.gpus_per_worker)(_ensure_teacher)
    inherited = [k for k in space.parameters if k.split(".")[0] in INHERITED_KEYS]
    files: dict[str, str | None] = {}
    for name in sweep_teachers(sweep, space):
        config = sweep.training_config({TEACHER_KEY: name})
        spec = resolve_teacher(config)
        if spec.recipe is None:
            files[name] = None
            continue
        if spec.source == "generic" and inherited:
            print(
                f"teacher stage: {name!r} is a generic recipe and the space searches"
                f" {inherited}: trials with other values train their own teacher",
                flush=True,
            )
        started = time.perf_counter()
        print(f"teacher stage: {name!r} ({spec.location})", flush=True)
        files[name] = ray.get(task.remote(config, name))
        print(
            f"teacher stage: {name!r} ready after {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return files


def _ensure_teacher(config: TrainConfig, name: str) -> str | None:
    path = ensure_teacher(config, [_EpochLines(name)])
    return None if path is None else str(path)


class _EpochLines(TrainingCallback):
    """One line per teacher epoch: a Ray task's output reaches the driver line by line."""

    def __init__(self, name: str) -> None:
        self.name, self.epochs = name, 0

    def on_train_begin(self, info: RunInfo) -> None:
        self.epochs = info.epochs

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        shown = "  ".join(
            f"{key}={metrics[key]:.4f}"
            for key in ("loss", "val_clean_acc", "val_pgd_acc")
            if isinstance(metrics.get(key), float)
        )
        print(f"teacher {self.name}: epoch {metrics['epoch']}/{self.epochs}  {shown}", flush=True)
