"""Tensor-backed datasets (digits, synthetic): storage and statistics shared by both."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from .base import DatasetInfo, Source


class LabelledTensors(TensorDataset):
    """``TensorDataset`` of ``(images, labels)`` whose labels come back as Python ints.

    Matches the item type of the torchvision datasets, so every split looks the same.
    """

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        images, labels = self.tensors
        return images[index], int(labels[index])


def tensor_source(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
) -> Source:
    """Wrap ``(images [N, C, H, W] in [0, 1], labels [N])`` pairs as a :class:`Source`.

    mean/std come from the whole official training part (before the val hold-out), so the
    model's Normalize layer does not change with the val seed. No augmentation exists for
    these tiny images, so ``train`` and ``train_plain`` are the same object.
    """
    train_images = train[0]
    std, mean = torch.std_mean(train_images, dim=(0, 2, 3))
    info = DatasetInfo(
        name=name,
        input_shape=tuple(train_images.shape[1:]),
        num_classes=num_classes,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )
    train_set = LabelledTensors(*train)
    return Source(train=train_set, train_plain=train_set, test=LabelledTensors(*test), info=info)
