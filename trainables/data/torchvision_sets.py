"""MNIST, CIFAR-10 and CIFAR-100 through torchvision: one generic loader, one spec per family."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchvision import datasets

from .base import DatasetInfo, DatasetNotFoundError, Source
from .pixels import Transformed, pixel_transform


@dataclass(frozen=True)
class TorchvisionFamily:
    """How to load one torchvision dataset and what to say when its files are missing."""

    dataset_class: type[datasets.VisionDataset]
    layout: str  # expected files, relative to the data root
    info: DatasetInfo
    augment_crop: int | None  # RandomCrop size for augment=True; None: no augmentation


MNIST = TorchvisionFamily(
    datasets.MNIST,
    "MNIST/raw/ with the uncompressed idx files train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
    DatasetInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,)),
    augment_crop=None,
)
CIFAR10 = TorchvisionFamily(
    datasets.CIFAR10,
    "cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta "
    "(the 'python version' from https://www.cs.toronto.edu/~kriz/cifar.html)",
    DatasetInfo("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    augment_crop=32,
)
CIFAR100 = TorchvisionFamily(
    datasets.CIFAR100,
    "cifar-100-python/ with train, test, meta "
    "(the 'python version' from https://www.cs.toronto.edu/~kriz/cifar.html)",
    DatasetInfo("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    augment_crop=32,
)


def required_files(family: TorchvisionFamily) -> list[str]:
    """The files torchvision reads for ``family``, relative to the data root."""
    cls = family.dataset_class
    if hasattr(cls, "base_folder"):  # CIFAR-10/100: pickled batches plus a meta file
        names = [name for name, _ in (*cls.train_list, *cls.test_list)] + [cls.meta["filename"]]
        return [f"{cls.base_folder}/{name}" for name in names]
    # MNIST: torchvision reads the uncompressed idx files from <root>/<ClassName>/raw/.
    return [f"{cls.__name__}/raw/{Path(url).stem}" for url, _ in cls.resources]


def torchvision_missing(family: TorchvisionFamily, root: Path) -> DatasetNotFoundError | None:
    """The error ``torchvision_source`` would raise for missing files, found without loading."""
    missing = [name for name in required_files(family) if not (root / name).is_file()]
    if not missing:
        return None
    return DatasetNotFoundError.describe(
        family.info.name,
        root,
        f"{root}/{family.layout}",
        _HOW_TO_GET,
        detail=f"missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}",
    )


_HOW_TO_GET = (
    "pass download=True (CLI: --set dataset.download=true) on a machine with internet "
    "access, or copy the files there"
)


def torchvision_source(
    family: TorchvisionFamily, root: Path, download: bool, augment: bool
) -> Source:
    """Load ``family`` from ``root``; torchvision downloads only when ``download`` is True."""
    try:
        # Images stay PIL here; the two Transformed views below share this one loaded copy.
        train = family.dataset_class(str(root), train=True, download=download)
        test = family.dataset_class(
            str(root), train=False, download=download, transform=pixel_transform()
        )
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise DatasetNotFoundError.describe(
            family.info.name,
            root,
            f"{root}/{family.layout}",
            _HOW_TO_GET,
            detail=f"torchvision: {err}",
        ) from err
    crop = family.augment_crop if augment else None
    return Source(
        train=Transformed(train, pixel_transform(crop)),
        train_plain=Transformed(train, pixel_transform()),
        test=test,
        info=family.info,
    )
