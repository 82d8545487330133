"""Loading a teacher for a trial: safe, checked, frozen, and timed.

The training loop only loads teachers; recipe teachers must already be in the cache
(``trainables.training.teacher_cache.ensure_teacher`` trains them, called before the loop).
Checkpoints load with ``torch.load(weights_only=True)`` from a local path or a pyarrow
filesystem URI; a missing file, an unreadable URI and another architecture's weights each
give one ``TeacherError`` naming the teacher and the location.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from trainables.checkpoints import CheckpointError, load_checkpoint, load_model_state
from trainables.config import TrainConfig
from trainables.data import DatasetInfo
from trainables.models import build_model_for, forward_features
from trainables.teachers.registry import TeacherError, resolve_teacher


@dataclass
class Teacher:
    """A frozen teacher network; calls run in eval mode under ``no_grad`` and are timed."""

    name: str
    model: nn.Sequential
    location: str
    seconds: float = 0.0  # time spent in calls since the last ``take_seconds``

    def __call__(self, x: Tensor, layers: Sequence[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the named features (``trainables.models.forward_features``) of ``x``."""
        self._sync(x)
        started = time.perf_counter()
        with torch.no_grad():
            out = forward_features(self.model, x, layers)
        self._sync(x)
        self.seconds += time.perf_counter() - started
        return out

    def take_seconds(self) -> float:
        """The time spent in calls since the last take (the loop reports it per epoch)."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    @staticmethod
    def _sync(x: Tensor) -> None:
        if x.is_cuda:  # kernels run asynchronously: wait for them so the time is the teacher's
            torch.cuda.synchronize(x.device)


def load_teacher(config: TrainConfig, info: DatasetInfo, device: torch.device) -> Teacher:
    """Build ``config.teacher.name``'s architecture for ``info`` and load its weights."""
    spec = resolve_teacher(config)
    where = f"teacher {spec.name!r} ({spec.source})"
    if spec.recipe is not None:
        if spec.recipe.dataset.name != config.dataset.name:
            raise TeacherError(
                f"{where} is trained on {spec.recipe.dataset.name!r}, but the student's"
                f" dataset.name is {config.dataset.name!r}"
            )
        if not Path(spec.location).is_file():  # the recipe cache is local
            raise TeacherError(
                f"{where} is not trained yet (no {spec.location}): call"
                " trainables.training.teacher_cache.ensure_teacher(config) before training"
                " (python -m trainables.train does)"
            )
    try:
        model = build_model_for(info, spec.model, spec.options)
    except ValueError as err:
        raise TeacherError(f"{where}: {err}") from None
    try:
        state = load_checkpoint(spec.location, map_location=device)
        load_model_state(model, _weights(state), f"{where} checkpoint {spec.location}")
    except CheckpointError as err:
        raise TeacherError(f"{where}: {err}") from None
    model.to(device).eval().requires_grad_(False)
    return Teacher(spec.name, model, spec.location)


def _weights(state: dict) -> dict:
    """A bare state dict, or the ``model`` entry of a training or teacher checkpoint."""
    return state["model"] if isinstance(state.get("model"), dict) else state
