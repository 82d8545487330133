"""TinyImageNet-200 as two torchvision ImageFolders (train, and the official val as test).

The official test set has no labels, so the labelled val set serves as the test split and
the val split is held out of train like for every other dataset.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.utils import download_and_extract_archive

from .base import DatasetInfo, DatasetNotFoundError, Source, data_root
from .pixels import Transformed, pixel_transform

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
INFO = DatasetInfo(
    "tinyimagenet", (3, 64, 64), 200, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
)


def _missing(root: Path, detail: str) -> DatasetNotFoundError:
    return DatasetNotFoundError.describe(
        "tinyimagenet",
        root / FOLDER,
        f"{root}/{FOLDER}/train/<wnid>/**/*.JPEG and {root}/{FOLDER}/val/<wnid>/*.JPEG",
        f"pass download=True (CLI: --set dataset.download=true), or unzip {URL} into {root} and "
        f"run trainables.data.prepare_tinyimagenet_val({str(root)!r}) to sort val/ into "
        "class folders",
        detail=detail,
    )


def prepare_tinyimagenet_val(root: str | os.PathLike[str] | None = None) -> Path:
    """Move the official val images into ``val/<wnid>/`` folders so ImageFolder can read them.

    The official zip keeps them in ``val/images/`` with labels in ``val/val_annotations.txt``
    (tab separated: file, wnid, box). Files are moved, not copied; rerunning is safe: moved
    files are skipped and the emptied ``val/images/`` is removed. Returns the val directory.
    """
    base = data_root(root)
    val_dir = base / FOLDER / "val"
    images = val_dir / "images"
    if not images.is_dir():
        if val_dir.is_dir():
            return val_dir  # already sorted
        raise _missing(base, f"{val_dir} does not exist")
    annotations = val_dir / "val_annotations.txt"
    if not annotations.is_file():
        raise _missing(base, f"{annotations} (labels of val/images) does not exist")
    for line in annotations.read_text().splitlines():
        if not line.strip():
            continue
        file_name, wnid = line.split("\t")[:2]
        source = images / file_name
        if source.is_file():
            (val_dir / wnid).mkdir(exist_ok=True)
            source.replace(val_dir / wnid / file_name)
    leftovers = sorted(p.name for p in images.iterdir())
    if leftovers:
        raise _missing(base, f"{len(leftovers)} files in {images} have no label in {annotations}")
    images.rmdir()
    return val_dir


def tinyimagenet_missing(root: Path) -> DatasetNotFoundError | None:
    """The error ``tinyimagenet_source`` would raise for missing folders, without loading."""
    base = root / FOLDER
    for folder in ("train", "val"):
        if not (base / folder).is_dir():
            return _missing(root, f"{base / folder} does not exist")
    if (base / "val" / "images").is_dir():
        return _missing(root, "val/ is still in the official layout (val/images/); sort it first")
    return None


def tinyimagenet_source(root: Path, download: bool, augment: bool) -> Source:
    """Load TinyImageNet; ``download`` fetches and prepares it if ``train/`` is absent."""
    base = root / FOLDER
    if download and not (base / "train").is_dir():
        download_and_extract_archive(URL, download_root=str(root), md5=MD5)
        prepare_tinyimagenet_val(root)
    if (base / "val" / "images").is_dir():
        raise _missing(root, "val/ is still in the official layout (val/images/); sort it first")
    try:
        train = ImageFolder(str(base / "train"))
        test = ImageFolder(str(base / "val"), transform=pixel_transform())
    except FileNotFoundError as err:
        raise _missing(root, str(err)) from err
    if test.class_to_idx != train.class_to_idx:
        raise _missing(root, "val/ and train/ have different class folders")
    crop = 64 if augment else None
    return Source(
        train=Transformed(train, pixel_transform(crop)),
        train_plain=Transformed(train, pixel_transform()),
        test=test,
        # 200 for the official set; counted so a partial copy still gets consistent labels.
        info=replace(INFO, num_classes=len(train.classes)),
    )
