"""Training recipe teachers once: the cache that many trials share.

This sits above the training loop (it calls ``train``; the loop never imports it, and the
``teachers`` package it reads recipes from imports nothing of the loop): the CLI, the Tune
trainable and the sweep's teacher stage call ``ensure_teacher(config)`` before a student. A
recipe's folder under the cache directory is named by the recipe's hash and holds
``recipe.yaml`` (for people), ``teacher.pt`` (the weights, once trained) and, while
training, the run's checkpoint, so a killed teacher run resumes where it stopped. A file
lock lets concurrent trials on one machine wait for a single training run.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

from trainables.checkpoints import save_checkpoint
from trainables.config import CheckpointConfig, TrainConfig
from trainables.teachers.registry import TeacherError, resolve_teacher
from trainables.training.callbacks import TrainingCallback
from trainables.training.loop import train


def ensure_teacher(config: TrainConfig, callbacks: Sequence[TrainingCallback] = ()) -> Path | None:
    """Train ``config.teacher.name``'s recipe unless the cache holds it; return its file.

    None when there is nothing to train: no teacher, or a checkpoint entry. The teacher
    trains on ``config.device``; ``callbacks`` follow its run (e.g. a progress bar).
    """
    if not config.distilling:
        return None
    spec = resolve_teacher(config)
    if spec.recipe is None:
        return None
    target = Path(spec.location)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder / ".lock"):
        if target.is_file():
            return target
        recipe = spec.recipe.model_dump(mode="json")
        (folder / "recipe.yaml").write_text(
            yaml.safe_dump({"name": spec.name, "source": spec.source, "recipe": recipe})
        )
        run_dir = folder / "run"
        run = spec.recipe.model_copy(
            update={"device": config.device, "checkpoint": CheckpointConfig(dir=str(run_dir))}
        )
        result = train(run, callbacks)
        if result.status != "completed":
            raise TeacherError(
                f"teacher {spec.name!r} ({spec.source}): training diverged in epoch"
                f" {result.diverged_epoch}; recipe in {folder / 'recipe.yaml'}"
            )
        weights = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        save_checkpoint(
            target, {"model": weights, "name": spec.name, "recipe": recipe, "final": result.final}
        )
        shutil.rmtree(run_dir, ignore_errors=True)
    return target


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
