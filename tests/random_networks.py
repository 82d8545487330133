"""Seeded random networks covering every layer mix the bound propagation supports."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.layers import Normalize


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            n = layer.num_features
            layer.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            layer.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))
            layer.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            layer.bias.data.copy_(0.6 * torch.rand(n, generator=generator) - 0.3)


def _mlp(shape: tuple[int, ...], classes: int) -> nn.Sequential:
    d = int(torch.tensor(shape).prod())
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, 12),
        nn.ReLU(),
        nn.Linear(12, 10),
        nn.ReLU(),
        nn.Linear(10, classes),
    )


def _mlp_bn(shape: tuple[int, ...], classes: int) -> nn.Sequential:
    d = int(torch.tensor(shape).prod())
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, 12),
        nn.BatchNorm1d(12),
        nn.ReLU(),
        nn.Linear(12, 10),
        nn.BatchNorm1d(10),
        nn.ReLU(),
        nn.Linear(10, classes),
    )


def _cnn(shape: tuple[int, ...], classes: int) -> nn.Sequential:
    c, h, w = shape
    return nn.Sequential(
        Normalize([0.4] * c, [0.3] * c),
        nn.Conv2d(c, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * ((h + 1) // 2) * ((w + 1) // 2), 10),
        nn.ReLU(),
        nn.Linear(10, classes),
    )


def _cnn_bn_pool(shape: tuple[int, ...], classes: int) -> nn.Sequential:
    c, h, w = shape
    return nn.Sequential(
        Normalize([0.5] * c, [0.25] * c),
        nn.Conv2d(c, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * (h // 2) * (w // 2), classes),
    )


def _nested_odd(shape: tuple[int, ...], classes: int) -> nn.Sequential:
    """Nested Sequentials, Identity, a grouped conv, pooling with stride != kernel, BN last."""
    c, h, w = shape
    pooled = (h - 3) // 1 + 1, (w - 3) // 1 + 1
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(c, 4, 2, padding=1), nn.ReLU(), nn.Identity()),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.ReLU()),
        nn.AvgPool2d(3, stride=1, padding=0),
        nn.Flatten(),
        nn.Linear(4 * (pooled[0] + 1) * (pooled[1] + 1), classes),
        nn.BatchNorm1d(classes),
    )


FAMILIES = {
    "mlp": _mlp,
    "mlp_bn": _mlp_bn,
    "cnn": _cnn,
    "cnn_bn_pool": _cnn_bn_pool,
    "nested_odd": _nested_odd,
}


def random_network(
    family: str, seed: int, shape: tuple[int, ...] = (1, 6, 6), classes: int = 4
) -> nn.Sequential:
    """An eval-mode float64 network of ``family`` with seeded weights and BN statistics."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FAMILIES[family](shape, classes)
    randomize_batchnorm(model, generator)
    return model.double().eval()


def random_box(
    seed: int,
    batch: int,
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
    max_eps: float = 0.22,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean inputs in [0, 1] and a clipped L-inf box around them, eps in [0.1, 1] * max_eps."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    x = torch.rand(batch, *shape, generator=generator, dtype=dtype)
    unit = torch.rand(batch, *([1] * len(shape)), generator=generator, dtype=dtype)
    eps = max_eps * (0.1 + 0.9 * unit)
    return x, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
