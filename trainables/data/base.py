"""Shared vocabulary of the dataset registry: what a loader returns and what callers get."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

DATA_ROOT_ENV = "CERTSWEEP_DATA"
DEFAULT_DATA_ROOT = "~/.cache/certsweep/data"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset without touching its files."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    mean: tuple[float, ...]  # per channel, for the model's Normalize layer (data stays in [0, 1])
    std: tuple[float, ...]


@dataclass(frozen=True)
class DatasetSplits:
    """Train / val / test splits; items are ``(x: float32 [C, H, W] in [0, 1], y: int)``."""

    train: Dataset
    val: Dataset  # held out of the official training set, never augmented
    test: Dataset
    info: DatasetInfo


@dataclass(frozen=True)
class Source:
    """One dataset as a loader delivers it, before the validation hold-out.

    ``train`` and ``train_plain`` index the same official training examples in the same order;
    only ``train`` may be augmented. Two objects let the registry carve the val split out of
    ``train_plain`` so validation never sees augmentation.
    """

    train: Dataset
    train_plain: Dataset
    test: Dataset
    info: DatasetInfo


class DatasetNotFoundError(FileNotFoundError):
    """A file-backed dataset is missing or incomplete.

    One exception type for every family, so callers (CLI, Ray trials) can catch it and show a
    message that says where the files must be and how to get them. The message is the only
    constructor argument so the error pickles across Ray processes.
    """

    @classmethod
    def describe(
        cls, dataset: str, directory: Path, layout: str, how_to_get: str, detail: str = ""
    ) -> DatasetNotFoundError:
        """Build the standard message: dataset, expected directory and layout, how to get it."""
        lines = [
            f"dataset {dataset!r} not found or incomplete in {directory}",
            f"  expected: {layout}",
            f"  to get it: {how_to_get}",
            f"  data root: the `root` argument, else ${DATA_ROOT_ENV}, else {DEFAULT_DATA_ROOT}",
        ]
        if detail:
            lines.append(f"  detail: {detail}")
        return cls("\n".join(lines))


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where file-backed datasets live: ``root``, else ``$CERTSWEEP_DATA``, else a user cache."""
    if root is None:
        root = os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return Path(root).expanduser()
