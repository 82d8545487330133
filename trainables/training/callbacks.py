"""The one interface through which the loop reports progress (the Ray wrapper hooks in here).

Callbacks run on every rank (Ray Train wants ``report`` from all workers); metrics are
already global, and ``RunInfo.is_main`` tells which rank may print or persist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.training.loop import RunResult


@dataclass(frozen=True)
class RunInfo:
    epochs: int
    batches_per_epoch: int
    start_epoch: int  # 0 for a fresh run, the checkpoint's epoch when resuming
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class TrainingCallback:
    """No-op base: override what you need (not Ray Tune's ``tune.Callback``, which hooks the
    sweep driver, not the loop)."""

    def on_train_begin(self, info: RunInfo) -> None:
        """Called once, after data, model and any checkpoint are loaded."""

    def on_batch_end(self, epoch: int, step: int, terms: dict[str, float]) -> None:
        """After each optimiser step (rank-local loss terms; ``step`` counts from 1)."""

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """After each epoch with its global metrics and the checkpoint written (if any)."""

    def on_train_end(self, result: RunResult) -> None:
        """Once at the end, also when the run diverged."""
