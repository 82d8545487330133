"""The dataset registry: name -> loader, plus the seeded validation hold-out."""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.utils.data import Subset

from .base import DatasetSplits, Source, data_root
from .digits import digits_source
from .synthetic import synthetic_source
from .tinyimagenet import tinyimagenet_source
from .torchvision_sets import CIFAR10, CIFAR100, MNIST, torchvision_source

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
    _check_options(name, loader, options)
    source = loader(data_root(root), download, augment, **options)
    train_idx, val_idx = split_indices(len(source.train_plain), val_size, seed)
    return DatasetSplits(
        train=Subset(source.train, train_idx),
        val=Subset(source.train_plain, val_idx),
        test=source.test,
        info=source.info,
    )


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


def _check_options(name: str, loader: Loader, options: dict[str, Any]) -> None:
    accepted = [
        p.name
        for p in inspect.signature(loader).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"dataset {name!r} has no option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
