"""Image-to-tensor transforms and the wrapper that applies them to an already loaded dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset
from torchvision import transforms


def pixel_transform(augment_crop: int | None = None) -> Callable[[Any], Any]:
    """PIL image -> float tensor in [0, 1]; with ``augment_crop``, random crop + flip first.

    No normalisation: it lives in the model so perturbation radii stay in pixel units.
    """
    to_tensor = transforms.ToTensor()
    if augment_crop is None:
        return to_tensor
    return transforms.Compose(
        [
            transforms.RandomCrop(augment_crop, padding=4),
            transforms.RandomHorizontalFlip(),
            to_tensor,
        ]
    )


class Transformed(Dataset):
    """Applies ``transform`` to the images of ``base`` (a dataset yielding ``(image, label)``).

    Lets one loaded copy of the training files serve both the augmented train split and the
    plain val split, instead of reading the files twice.
    """

    def __init__(self, base: Dataset, transform: Callable[[Any], Any]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index]
        return self.transform(image), label
