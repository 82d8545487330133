"""BatchNorm statistics across the forward passes of one training step (``bn_stats``).

A certified-training step runs several forward passes (clean, adversarial, bounds). The
conventions, chosen by the config's ``bn_stats``:

* ``clean`` (default): every pass normalises with the mean and biased variance of the clean
  batch, captured from the clean forward pass (``capture_statistics``), and only that pass
  updates the running statistics (``normalise_with``);
* ``own``: each pass normalises with its own batch's statistics (a plain train-mode pass);
  the bounds with those of the box centre;
* ``adversarial`` (expressive-losses ``train.py``): each pass uses its own statistics and
  the bounds use those of the student's adversarial pass when the step makes one (the clean
  batch's otherwise).

The bounds receive captured statistics through ``margin_bounds`` (``methods.context``), so
they need no extra forward pass. Gradients flow through captured statistics, as they do in
a plain train-mode forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from trainables.bounds.ops import batchnorm_affine

Statistics = dict[nn.Module, tuple[Tensor, Tensor]]


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def capture_statistics(model: nn.Module) -> Iterator[Statistics]:
    """Record ``(mean, biased var)`` of every train-mode BatchNorm's input during the block."""
    statistics: Statistics = {}

    def record(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if module.training:
            x = inputs[0]
            dims = [0, *range(2, x.dim())]
            var, mean = torch.var_mean(x, dim=dims, unbiased=False)
            statistics[module] = (mean, var)

    handles = [bn.register_forward_pre_hook(record) for bn in _batchnorms(model)]
    try:
        yield statistics
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def normalise_with(model: nn.Module, statistics: Statistics) -> Iterator[None]:
    """Within the block, BatchNorms in ``statistics`` use those statistics, updating nothing."""
    patched = []
    for bn in _batchnorms(model):
        if bn in statistics:
            mean, var = statistics[bn]
            bn.forward = _fixed_statistics_forward(bn, mean, var)  # type: ignore[method-assign]
            patched.append(bn)
    try:
        yield
    finally:
        for bn in patched:
            del bn.forward  # back to the class's forward


def _fixed_statistics_forward(bn: nn.Module, mean: Tensor, var: Tensor):
    """The BatchNorm as the affine map its ``(mean, var)`` define (the bounds' own map)."""
    scale, shift = batchnorm_affine(bn, mean, var)

    def forward(x: Tensor) -> Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x * scale.view(shape) + shift.view(shape)

    return forward
