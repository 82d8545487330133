"""A deterministic, file-free toy dataset for tests: one noisy prototype image per class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .base import Source
from .in_memory import tensor_source

_SEED = 20240601  # fixed: the same options always give the same data, whatever the val seed
_NOISE = 0.05  # small next to the prototypes' spread, so the classes are separable


def synthetic_shape(
    *, num_classes: int = 3, input_shape: Sequence[int] = (1, 8, 8), size: int = 300
) -> tuple[tuple[int, int, int], int]:
    """``(input_shape, num_classes)`` of the options, checked (``ValueError`` naming one)."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"synthetic: input_shape must be (C, H, W), got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"synthetic: input_shape must be (C, H, W) with positive sizes, got {shape}"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"synthetic: num_classes must be an int >= 2, got {num_classes!r}")
    if not isinstance(size, int) or size < 3:
        raise ValueError(f"synthetic: size must be >= 3 (test has size // 3 images), got {size!r}")
    return shape, num_classes  # type: ignore[return-value]


def synthetic_source(
    root: Path,
    download: bool,
    augment: bool,
    *,
    num_classes: int = 3,
    input_shape: Sequence[int] = (1, 8, 8),
    size: int = 300,
) -> Source:
    """``size`` training and ``size // 3`` test images with balanced labels.

    Class prototypes are uniform in [0.2, 0.8] per pixel; samples add Gaussian noise and are
    clipped to [0, 1]. ``root``/``download``/``augment`` are unused.
    """
    shape, num_classes = synthetic_shape(
        num_classes=num_classes, input_shape=input_shape, size=size
    )
    generator = torch.Generator().manual_seed(_SEED)
    prototypes = 0.2 + 0.6 * torch.rand((num_classes, *shape), generator=generator)

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(count) % num_classes
        noise = _NOISE * torch.randn((count, *shape), generator=generator)
        return (prototypes[labels] + noise).clamp(0.0, 1.0), labels

    return tensor_source("synthetic", sample(size), sample(size // 3), num_classes=num_classes)
