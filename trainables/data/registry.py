"""The dataset registry: name -> loader, plus the seeded validation hold-out."""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from .base import DatasetNotFoundError, DatasetSplits, Source, data_root
from .digits import digits_source
from .synthetic import synthetic_shape, synthetic_source
from .tinyimagenet import INFO as TINYIMAGENET_INFO
from .tinyimagenet import tinyimagenet_missing, tinyimagenet_source
from .torchvision_sets import CIFAR10, CIFAR100, MNIST, torchvision_missing, torchvision_source

# A loader is called as loader(root, download, augment, **options); its keyword-only
# parameters are the dataset's options.
Loader = Callable[..., Source]

_LOADERS: dict[str, Loader] = {
    "digits": digits_source,
    "mnist": partial(torchvision_source, MNIST),
    "cifar10": partial(torchvision_source, CIFAR10),
    "cifar100": partial(torchvision_source, CIFAR100),
    "tinyimagenet": tinyimagenet_source,
    "synthetic": synthetic_source,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)

#: (C, H, W) and class count of the file-free or fixed-size datasets, known without loading.
_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    **{f.info.name: (f.info.input_shape, f.info.num_classes) for f in (MNIST, CIFAR10, CIFAR100)},
    "tinyimagenet": (TINYIMAGENET_INFO.input_shape, TINYIMAGENET_INFO.num_classes),
}
#: How to find missing files of the file-backed datasets without loading them.
_PRESENCE: dict[str, Callable[[Path], DatasetNotFoundError | None]] = {
    "mnist": partial(torchvision_missing, MNIST),
    "cifar10": partial(torchvision_missing, CIFAR10),
    "cifar100": partial(torchvision_missing, CIFAR100),
    "tinyimagenet": tinyimagenet_missing,
}


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    val_size: int | float = 0.1,
    seed: int = 0,
    download: bool = False,
    augment: bool = False,
    **options: Any,
) -> DatasetSplits:
    """Load ``name`` and hold ``val_size`` examples (count, or fraction) out of its train set.

    ``root`` defaults to ``$CERTSWEEP_DATA``, else ``~/.cache/certsweep/data``; nothing is
    downloaded unless ``download=True``. ``augment`` augments the train split only (CIFAR:
    crop 32 pad 4 + flip; TinyImageNet: crop 64 pad 4 + flip; MNIST, digits, synthetic: none).
    ``seed`` moves only the val/train boundary, never the test set.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    _check_options(name, options)
    source = loader(data_root(root), download, augment, **options)
    train_idx, val_idx = split_indices(len(source.train_plain), val_size, seed)
    return DatasetSplits(
        train=Subset(source.train, train_idx),
        val=Subset(source.train_plain, val_idx),
        test=source.test,
        info=source.info,
    )


def dataset_options(name: str) -> list[str]:
    """The options (``dataset.options``) dataset ``name`` accepts."""
    return [
        p.name
        for p in inspect.signature(_LOADERS[name]).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def dataset_shape(name: str, **options: Any) -> tuple[tuple[int, int, int], int]:
    """``(input_shape, num_classes)`` of ``name`` with ``options``, without reading files.

    TinyImageNet counts its classes from the folders when loaded; this gives the official 200.
    """
    if name == "synthetic":
        return synthetic_shape(**options)
    return _SHAPES[name]


def find_missing(
    name: str, root: str | os.PathLike[str] | None = None, *, download: bool = False
) -> DatasetNotFoundError | None:
    """The error loading ``name`` from ``root`` would raise for missing files, or None.

    Checks that the files are there (not their checksums), so it takes milliseconds; with
    ``download`` nothing is missing, as the loader fetches what is.
    """
    check = _PRESENCE.get(name)
    return None if check is None or download else check(data_root(root))


def split_indices(n: int, val_size: int | float, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint (train, val) index lists covering ``range(n)``, from a seeded permutation."""
    n_val = _val_count(val_size, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def _val_count(val_size: object, n: int) -> int:
    if isinstance(val_size, numbers.Integral) and not isinstance(val_size, bool):
        count = int(val_size)
    elif isinstance(val_size, numbers.Real) and not isinstance(val_size, bool) and 0 < val_size < 1:
        count = round(float(val_size) * n)
    else:
        raise ValueError(
            f"val_size={val_size!r}: expected an int count or a float fraction in (0, 1)"
        )
    if not 0 <= count < n:
        raise ValueError(
            f"val_size={val_size!r} gives {count} val examples; it must be >= 0 and leave at "
            f"least one of the {n} training examples"
        )
    return count


def _check_options(name: str, options: dict[str, Any]) -> None:
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"dataset {name!r} has no option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
