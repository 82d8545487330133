"""Layers shared by the model zoo and understood by the bound propagation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer.

    Normalisation lives inside the model so that perturbation boxes stay in pixel space
    ([0, 1]); the bound propagation treats this layer as a per-channel affine map.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"Normalize: mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"Normalize: every std must be > 0, got {list(std)}")
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def scale(self) -> torch.Tensor:
        """Per-channel multiplier of the equivalent affine map ``scale * x + shift``."""
        return 1.0 / self.std.flatten()

    @property
    def shift(self) -> torch.Tensor:
        """Per-channel offset of the equivalent affine map ``scale * x + shift``."""
        return (-self.mean / self.std).flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}"
