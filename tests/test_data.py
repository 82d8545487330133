"""Dataset registry: splits, pixel range, real on-disk formats (written tiny), errors."""

from __future__ import annotations

import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from trainables.data import (
    DATASETS,
    DatasetNotFoundError,
    dataset_shape,
    find_missing,
    load_dataset,
    prepare_tinyimagenet_val,
)

DIGITS_TOTAL, DIGITS_TEST = 1797, 360  # 20 % stratified test split (ceil(0.2 * 1797))
DIGITS_TRAIN = DIGITS_TOTAL - DIGITS_TEST


def stack(dataset) -> tuple[torch.Tensor, list[int]]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), list(ys)


def as_pixels(array: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W] or [..., C, H, W] -> the float values ToTensor must produce (v / 255)."""
    return torch.from_numpy(array).float() / 255


# --------------------------------------------------------------------------- digits


def test_digits_shapes_range_classes_and_split_sizes():
    splits = load_dataset("digits")
    info = splits.info
    assert (info.name, info.input_shape, info.num_classes) == ("digits", (1, 8, 8), 10)
    assert len(info.mean) == len(info.std) == 1 and 0 < info.mean[0] < 1 and info.std[0] > 0
    n_val = round(0.1 * DIGITS_TRAIN)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (
        DIGITS_TRAIN - n_val,
        n_val,
        DIGITS_TEST,
    )
    for split in (splits.train, splits.val, splits.test):
        x, y = stack(split)
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert x.min() == 0 and x.max() == 1  # 0..16 divided by 16, not left raw or /255
        assert all(type(label) is int for label in y)
        assert set(y) == set(range(10))


def test_digits_train_and_val_are_disjoint_and_cover_the_training_part():
    splits = load_dataset("digits", val_size=200, seed=3)
    train_idx, val_idx = set(splits.train.indices), set(splits.val.indices)
    assert not train_idx & val_idx
    assert train_idx | val_idx == set(range(DIGITS_TRAIN))
    assert len(splits.train.dataset) == DIGITS_TRAIN


def test_digits_test_split_is_fixed_and_val_follows_the_seed():
    a, same, other = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    assert torch.equal(stack(a.test)[0], stack(other.test)[0])
    assert stack(a.test)[1] == stack(other.test)[1]
    assert a.val.indices == same.val.indices and a.train.indices == same.train.indices
    assert torch.equal(stack(a.val)[0], stack(same.val)[0])
    assert a.val.indices != other.val.indices
    assert a.info == other.info  # stats come from the whole training part, not the seed's split


@pytest.mark.parametrize(("val_size", "expected"), [(0, 0), (100, 100), (0.25, 359)])
def test_val_size_is_a_count_or_a_fraction(val_size, expected):
    splits = load_dataset("digits", val_size=val_size)
    assert len(splits.val) == expected
    assert len(splits.train) == DIGITS_TRAIN - expected


@pytest.mark.parametrize(
    "val_size", [-1, DIGITS_TRAIN, 5000, 0.0, 1.0, 1.5, -0.1, math.nan, "0.1", True, None]
)
def test_bad_val_size_is_rejected_with_its_value(val_size):
    with pytest.raises(ValueError, match="val_size") as err:
        load_dataset("digits", val_size=val_size)
    assert repr(val_size) in str(err.value)


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(ValueError, match="imagenet21k") as err:
        load_dataset("imagenet21k")
    assert all(name in str(err.value) for name in DATASETS)
    assert DATASETS == ("digits", "mnist", "cifar10", "cifar100", "tinyimagenet", "synthetic")


def test_unknown_option_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset("digits", num_classes=3)
    with pytest.raises(ValueError, match="colour"):
        load_dataset("synthetic", colour=True)


def test_distributed_sampler_shards_are_disjoint_and_cover_the_split():
    splits = load_dataset("digits", val_size=143)  # train 1294, test 360: even, so no padding
    for split in (splits.train, splits.test):
        shards = [
            list(DistributedSampler(split, num_replicas=2, rank=rank, shuffle=True, seed=0))
            for rank in (0, 1)
        ]
        assert len(shards[0]) == len(shards[1]) == len(split) // 2
        assert not set(shards[0]) & set(shards[1])
        assert set(shards[0]) | set(shards[1]) == set(range(len(split)))
        sampler = DistributedSampler(split, num_replicas=2, rank=1, shuffle=True, seed=0)
        x, y = next(iter(DataLoader(split, batch_size=32, sampler=sampler)))
        assert x.shape == (32, 1, 8, 8) and y.dtype == torch.int64
        assert torch.equal(x[0], split[shards[1][0]][0])


# --------------------------------------------------------------------------- synthetic


def test_synthetic_defaults_options_and_determinism():
    splits = load_dataset("synthetic")
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (300, 100)
    assert splits.info.input_shape == (1, 8, 8) and splits.info.num_classes == 3

    custom = load_dataset("synthetic", num_classes=4, input_shape=[3, 4, 5], size=120, val_size=20)
    assert (len(custom.train), len(custom.val), len(custom.test)) == (100, 20, 40)
    x, y = stack(custom.train)
    assert x.shape[1:] == (3, 4, 5) and custom.info.input_shape == (3, 4, 5)
    assert len(custom.info.mean) == 3 and set(y) == set(range(4))
    assert x.min() >= 0 and x.max() <= 1

    again = load_dataset("synthetic", num_classes=4, input_shape=[3, 4, 5], size=120, val_size=20)
    assert torch.equal(stack(again.test)[0], stack(custom.test)[0])


def test_synthetic_is_learnable_by_nearest_class_mean():
    splits = load_dataset("synthetic", num_classes=5)
    x, y = stack(splits.train)
    labels = torch.tensor(y)
    means = torch.stack([x[labels == c].mean(0) for c in range(5)]).flatten(1)
    tx, ty = stack(splits.test)
    predicted = torch.cdist(tx.flatten(1), means).argmin(1)
    assert (predicted == torch.tensor(ty)).float().mean() > 0.95


# --------------------------------------------------------------------------- MNIST (idx files)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Uncompressed idx: big-endian magic (2051 images, 2049 labels), sizes, then uint8 data."""
    magic = {3: 2051, 1: 2049}[array.ndim]
    path.write_bytes(struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes())


def write_mnist(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", 12), ("t10k", 6)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = images
        arrays[f"{prefix}_labels"] = labels
    return arrays


def test_mnist_reads_real_idx_files(tmp_path):
    arrays = write_mnist(tmp_path, np.random.default_rng(0))
    splits = load_dataset("mnist", tmp_path, val_size=4)
    assert splits.info.name == "mnist" and splits.info.input_shape == (1, 28, 28)
    assert splits.info.mean == (0.1307,) and splits.info.std == (0.3081,)
    assert sorted(splits.train.indices + splits.val.indices) == list(range(12))
    for split, prefix in ((splits.train, "train"), (splits.val, "train"), (splits.test, "t10k")):
        x, y = stack(split)
        index = split.indices if prefix == "train" else list(range(6))
        torch.testing.assert_close(x, as_pixels(arrays[prefix][index]).unsqueeze(1))
        assert y == arrays[f"{prefix}_labels"][index].tolist()


def test_mnist_download_flag_reaches_torchvision(tmp_path, monkeypatch):
    # No network here: stand in for torchvision's download by writing the files it would fetch.
    calls = []

    def fake_download(dataset):
        calls.append(dataset.root)
        if not (tmp_path / "MNIST").exists():
            write_mnist(tmp_path, np.random.default_rng(1))

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", tmp_path)  # download=False: never fetches
    assert not calls
    assert len(load_dataset("mnist", tmp_path, download=True).test) == 6
    assert calls


def test_root_defaults_to_env_var_then_user_cache(tmp_path, monkeypatch):
    write_mnist(tmp_path / "env", np.random.default_rng(0))
    monkeypatch.setenv("CERTSWEEP_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist").test) == 6

    monkeypatch.delenv("CERTSWEEP_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist")
    assert str(tmp_path / "home" / ".cache" / "certsweep" / "data" / "MNIST") in str(err.value)


# --------------------------------------------------------------------------- CIFAR (pickles)


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """torchvision checks the md5 of the real CIFAR files; tiny test files cannot match, so
    only the checksum part of the integrity check is replaced (files must still exist)."""
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )


def dump(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """cifar-10-batches-py: data_batch_1..5 + test_batch ({'data': uint8 [N, 3072], 'labels'})."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    parts = {}
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        dump(folder / name, {"batch_label": name, "labels": labels, "data": data})
        parts[name] = (data, labels)
    dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    train = [parts[f"data_batch_{i}"] for i in range(1, 6)]
    return {
        "train": np.concatenate([d for d, _ in train]),
        "train_labels": np.array([label for _, labels in train for label in labels]),
        "test": parts["test_batch"][0],
        "test_labels": np.array(parts["test_batch"][1]),
    }


def write_cifar100(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """cifar-100-python: train, test ({'data', 'fine_labels', 'coarse_labels'}) + meta."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays = {}
    for name, n in (("train", 10), ("test", 5)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n)
        dump(
            folder / name,
            {"data": data, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()},
        )
        arrays[name], arrays[f"{name}_labels"] = data, fine
    dump(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    return arrays


@pytest.mark.usefixtures("skip_cifar_md5")
@pytest.mark.parametrize(
    ("name", "writer", "n_train"),
    [("cifar10", write_cifar10, 20), ("cifar100", write_cifar100, 10)],
)
def test_cifar_reads_real_python_pickles(tmp_path, name, writer, n_train):
    arrays = writer(tmp_path, np.random.default_rng(0))
    splits = load_dataset(name, tmp_path, val_size=0.2)
    assert splits.info.name == name and splits.info.input_shape == (3, 32, 32)
    assert splits.info.num_classes == (10 if name == "cifar10" else 100)
    assert len(splits.val) == round(0.2 * n_train)
    assert sorted(splits.train.indices + splits.val.indices) == list(range(n_train))
    for split, part in ((splits.train, "train"), (splits.val, "train"), (splits.test, "test")):
        x, y = stack(split)
        index = split.indices if part == "train" else list(range(len(split)))
        # a row is 1024 R, 1024 G, 1024 B values, each a row-major 32x32 plane
        expected = as_pixels(arrays[part][index].reshape(-1, 3, 32, 32))
        torch.testing.assert_close(x, expected)
        assert y == arrays[f"{part}_labels"][index].tolist()


@pytest.mark.usefixtures("skip_cifar_md5")
def test_augment_changes_train_samples_but_never_val_or_test(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(0))
    torch.manual_seed(0)
    plain = load_dataset("cifar10", tmp_path, val_size=6)
    augmented = load_dataset("cifar10", tmp_path, val_size=6, augment=True)
    assert augmented.train.indices == plain.train.indices
    plain_train, plain_labels = stack(plain.train)
    for _ in range(3):
        x, y = stack(augmented.train)
        assert x.shape == plain_train.shape and y == plain_labels
        assert any(not torch.equal(a, b) for a, b in zip(x, plain_train, strict=True))
        assert torch.equal(stack(augmented.val)[0], stack(plain.val)[0])
        assert torch.equal(stack(augmented.test)[0], stack(plain.test)[0])


@pytest.mark.usefixtures("skip_cifar_md5")
def test_incomplete_cifar_is_reported_as_missing(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(0))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"data_batch_1\.\.5"):
        load_dataset("cifar10", tmp_path)


# --------------------------------------------------------------------------- TinyImageNet (JPEG)

WNIDS = ("n01443537", "n01629819", "n01641577")


def write_jpeg(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), color).save(path, quality=100, subsampling=0)


def write_tinyimagenet(root: Path, official_val: bool) -> dict[tuple[int, int, int], str]:
    """A 3-class tree as the official zip has it; returns each image's colour -> wnid.

    train/<wnid>/images/<wnid>_<k>.JPEG (+ the <wnid>_boxes.txt ImageFolder must ignore);
    val either sorted into val/<wnid>/ or official: val/images/ + val/val_annotations.txt.
    """
    base = root / "tiny-imagenet-200"
    colors = {}
    annotations = []
    for c, wnid in enumerate(WNIDS):
        for k in range(2):
            color = (40 + 60 * c, 30 + 100 * k, 200 - 50 * c)
            write_jpeg(base / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", color)
            colors[color] = wnid
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        color = (20 + 60 * c, 240, 10 + 50 * c)
        file_name = f"val_{c}.JPEG"
        folder = "images" if official_val else wnid
        write_jpeg(base / "val" / folder / file_name, color)
        colors[color] = wnid
        annotations.append(f"{file_name}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    return colors


def assert_tinyimagenet_split(split, colors) -> None:
    x, y = stack(split)
    assert x.shape[1:] == (3, 64, 64) and x.dtype == torch.float32
    for image, label in zip(x, y, strict=True):
        color = tuple(round(v) for v in (image.mean((1, 2)) * 255).tolist())
        nearest = min(colors, key=lambda c: sum(abs(a - b) for a, b in zip(c, color, strict=True)))
        assert max(abs(a - b) for a, b in zip(nearest, color, strict=True)) <= 2
        assert (image * 255 - torch.tensor(nearest).view(3, 1, 1)).abs().max() <= 3
        assert WNIDS[label] == colors[nearest]


def test_tinyimagenet_reads_imagefolder_layout(tmp_path):
    colors = write_tinyimagenet(tmp_path, official_val=False)
    splits = load_dataset("tinyimagenet", tmp_path, val_size=2)
    assert splits.info.name == "tinyimagenet" and splits.info.input_shape == (3, 64, 64)
    assert splits.info.num_classes == 3  # 200 on the official set: counted from train/
    assert splits.info.mean == (0.4802, 0.4481, 0.3975)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 3)
    for split in (splits.train, splits.val, splits.test):
        assert_tinyimagenet_split(split, colors)
    augmented = load_dataset("tinyimagenet", tmp_path, val_size=2, augment=True)
    assert stack(augmented.train)[0].shape == (4, 3, 64, 64)


def test_prepare_tinyimagenet_val_sorts_the_official_layout(tmp_path):
    colors = write_tinyimagenet(tmp_path, official_val=True)
    with pytest.raises(DatasetNotFoundError, match="prepare_tinyimagenet_val"):
        load_dataset("tinyimagenet", tmp_path)

    val_dir = prepare_tinyimagenet_val(tmp_path)
    assert val_dir == tmp_path / "tiny-imagenet-200" / "val"
    assert not (val_dir / "images").exists()
    moved = sorted(p.relative_to(val_dir).as_posix() for p in val_dir.glob("*/*.JPEG"))
    assert moved == [f"{wnid}/val_{c}.JPEG" for c, wnid in enumerate(WNIDS)]
    assert prepare_tinyimagenet_val(tmp_path) == val_dir  # idempotent
    assert sorted(p.relative_to(val_dir).as_posix() for p in val_dir.glob("*/*.JPEG")) == moved

    assert_tinyimagenet_split(load_dataset("tinyimagenet", tmp_path).test, colors)


def test_tinyimagenet_download_extracts_and_prepares(tmp_path, monkeypatch):
    # No network here: stand in for the zip download by writing the official layout.
    def fake_download_and_extract_archive(url, download_root, md5):
        assert url.endswith("tiny-imagenet-200.zip") and md5
        write_tinyimagenet(Path(download_root), official_val=True)

    monkeypatch.setattr(
        "trainables.data.tinyimagenet.download_and_extract_archive",
        fake_download_and_extract_archive,
    )
    splits = load_dataset("tinyimagenet", tmp_path, download=True)
    assert len(splits.test) == 3
    assert not (tmp_path / "tiny-imagenet-200" / "val" / "images").exists()


# --------------------------------------------------------------------------- missing files


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("mnist", "MNIST/raw/ with the uncompressed idx files train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/ with data_batch_1..5, test_batch"),
        ("cifar100", "cifar-100-python/ with train, test, meta"),
        ("tinyimagenet", "tiny-imagenet-200/train/<wnid>/**/*.JPEG"),
    ],
)
def test_missing_dataset_says_where_and_how(tmp_path, name, layout):
    root = tmp_path / "nothing-here"
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, root)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert repr(name) in message and f"{root}/{layout}" in message
    assert "download=True" in message
    if name == "tinyimagenet":
        assert "prepare_tinyimagenet_val" in message
    assert not root.exists()  # nothing downloaded or created
    assert str(pickle.loads(pickle.dumps(err.value))) == message  # crosses Ray processes


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "tinyimagenet"])
def test_find_missing_agrees_with_loading_without_reading_the_files(tmp_path, name):
    """What validation says about the data before a run: present exactly when it loads."""
    empty = find_missing(name, tmp_path / "nothing-here")
    assert isinstance(empty, DatasetNotFoundError) and repr(name) in str(empty)
    assert find_missing(name, tmp_path / "nothing-here", download=True) is None
    writers = {
        "mnist": lambda: write_mnist(tmp_path, np.random.default_rng(0)),
        "cifar10": lambda: write_cifar10(tmp_path, np.random.default_rng(0)),
        "cifar100": lambda: write_cifar100(tmp_path, np.random.default_rng(0)),
        "tinyimagenet": lambda: write_tinyimagenet(tmp_path, official_val=True),
    }
    writers[name]()
    if name == "tinyimagenet":  # the official val/images layout does not load yet
        assert "val/images" in str(find_missing(name, tmp_path))
        prepare_tinyimagenet_val(tmp_path)
    assert find_missing(name, tmp_path) is None
    assert find_missing("digits") is None and find_missing("synthetic") is None


def test_dataset_shape_is_known_without_loading():
    assert dataset_shape("digits") == (load_dataset("digits").info.input_shape, 10)
    assert dataset_shape("cifar100") == ((3, 32, 32), 100)
    assert dataset_shape("synthetic", num_classes=4, input_shape=[3, 4, 5]) == ((3, 4, 5), 4)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        dataset_shape("synthetic", num_classes=1)
