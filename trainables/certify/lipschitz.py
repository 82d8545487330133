"""Certificates from a global L2 Lipschitz constant (Tsuzuku et al. 2018; Li et al. 2019).

If ``f`` is L-Lipschitz in L2, each margin ``z_y - z_j`` is sqrt(2) L-Lipschitz, so the
prediction cannot change within the L2 radius ``margin / (sqrt(2) L)``; an L-inf ball of
radius eps lies inside the L2 ball of radius ``eps * sqrt(d)`` (d = input dimension), so the
L-inf radius is the L2 radius divided by sqrt(d).

The constant is a sound upper bound computed from the weights actually used: the product of
per-layer bounds, after exporting deel-torchlip layers to plain ones (``vanilla_model``); the
library's nominal "1-Lipschitz" is never trusted, because its parametrisations (power
iteration, Bjorck) are approximate. Per layer: Linear exactly (float64 SVD); Conv2d by the
im2col argument (``||conv|| <= sqrt(max patch overlaps) * ||kernel matrix||``); Normalize and
eval-mode BatchNorm by their largest scale; ReLU, GroupSort, MaxMin, Flatten, Identity: 1.
Any other layer raises, so a certificate is never silently wrong. Works for any plain
``nn.Sequential`` of these layers (ReLU networks too, where the bound is usually loose).

``measured_lipschitz`` (power iteration on the network's Jacobian at given points) is a lower
estimate of the true constant: the tests check it never exceeds the claimed bound.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from trainables.attacks.classification import true_class_margin
from trainables.models.layers import Normalize
from trainables.models.modes import eval_mode

#: Relative slack on the constant: covers float32 rounding of the forward pass that computes
#: the margins (~1e-7 per operation), which the float64 bound does not model.
ROUNDING_SLACK = 1e-5


class UnsupportedLipschitzLayer(ValueError):
    """The network has a layer without a known Lipschitz bound."""


def exported(model: nn.Module) -> nn.Module:
    """A plain-torch copy in eval mode: deel-torchlip layers replaced by their vanilla export."""
    copied = copy.deepcopy(model).eval()
    if any(hasattr(m, "vanilla_export") for m in copied.modules()):
        from deel.torchlip import vanilla_model  # only models built from torchlip get here

        copied = vanilla_model(copied, in_place=True)
    return copied


def lipschitz_bound(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Sound upper bound of ``model``'s L2 Lipschitz constant on inputs of ``input_shape``."""
    plain = exported(model)
    bound, shape = 1.0, tuple(input_shape)
    with torch.no_grad():
        for layer in _leaves(plain):
            bound *= _layer_bound(layer, shape)
            shape = tuple(layer(torch.zeros(1, *shape, dtype=_dtype(plain))).shape[1:])
    return bound * (1 + ROUNDING_SLACK)


def l2_radius(model: nn.Module, x: Tensor, y: Tensor, constant: float) -> Tensor:
    """Certified L2 radius per sample: ``margin / (sqrt(2) L)``, 0 where misclassified."""
    with torch.no_grad(), eval_mode(model):
        margin = true_class_margin(model(x), y)
    return margin.clamp(min=0) / (math.sqrt(2) * constant)


def certify_lipschitz(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, constant: float | None = None
) -> Tensor:
    """Per-sample mask: correct and certified in the L-inf ball of radius ``eps``.

    ``constant`` defaults to ``lipschitz_bound`` (pass it when certifying many batches).
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if constant is None:
        constant = lipschitz_bound(model, tuple(x.shape[1:]))
    radius = l2_radius(model, x, y, constant)
    return (radius > 0) & (radius > eps * math.sqrt(x[0].numel()))


def measured_lipschitz(model: nn.Module, x: Tensor, iterations: int = 50) -> float:
    """Largest Jacobian spectral norm of ``model`` at the points ``x`` (power iteration).

    A lower estimate of the global constant (no local gain exceeds it). All points iterate
    in one batch: in eval mode samples are independent, so the batch's Jacobian is block
    diagonal and each block's power iteration runs on its own.
    """
    plain = exported(model)
    points = x.to(_dtype(plain))
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(points.shape, generator=generator, dtype=points.dtype)
    gain = torch.zeros(len(points), dtype=points.dtype)
    _, pullback = torch.func.vjp(plain, points)
    for _ in range(iterations):
        v = v / v.flatten(1).norm(dim=1).view(-1, *[1] * (v.dim() - 1))
        _, jv = torch.func.jvp(plain, (points,), (v,))
        gain = jv.flatten(1).norm(dim=1)
        (v,) = pullback(jv)
    return gain.max().item()


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The layers in forward order (nested Sequentials flattened)."""
    if not isinstance(model, nn.Sequential):
        return [model]
    return [leaf for child in model for leaf in _leaves(child)]


def _dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters()), torch.float32)


def _layer_bound(layer: nn.Module, shape: tuple[int, ...]) -> float:
    if isinstance(layer, nn.Linear):
        return torch.linalg.matrix_norm(layer.weight.double(), ord=2).item()
    if isinstance(layer, nn.Conv2d):
        return _conv_bound(layer)
    if isinstance(layer, Normalize):
        return layer.scale.abs().max().item()
    if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d) and not layer.training:
        scale = 1 / torch.sqrt(layer.running_var.double() + layer.eps)
        if layer.weight is not None:
            scale = scale * layer.weight.double().abs()
        return scale.max().item()
    if isinstance(layer, nn.ReLU | nn.Flatten | nn.Identity) or _is_sorting(layer):
        return 1.0
    raise UnsupportedLipschitzLayer(
        f"no Lipschitz bound for layer {type(layer).__name__}; supported: Linear, Conv2d"
        " (zero padding, groups=1, no dilation), Normalize, eval-mode BatchNorm, ReLU,"
        " GroupSort, MaxMin, Flatten, Identity"
    )


def _conv_bound(conv: nn.Conv2d) -> float:
    """``sqrt(max overlaps) * ||W||_2`` with W the [out, in * kh * kw] kernel matrix.

    The conv is W applied to every input patch; a pixel lies in at most
    ``ceil(kh / sh) * ceil(kw / sw)`` patches, so stacking the patches scales a norm by at
    most its square root. (Dilation can add overlaps, other paddings repeat pixels: refused.)
    """
    if conv.groups != 1 or conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        raise UnsupportedLipschitzLayer(
            f"Conv2d with groups={conv.groups}, padding_mode={conv.padding_mode!r},"
            f" dilation={conv.dilation}: only groups=1, zero padding, dilation 1 are supported"
        )
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    overlaps = math.ceil(kh / sh) * math.ceil(kw / sw)
    matrix = conv.weight.double().flatten(1)
    return math.sqrt(overlaps) * torch.linalg.matrix_norm(matrix, ord=2).item()


def _is_sorting(layer: nn.Module) -> bool:
    """deel-torchlip's norm-preserving activations (GroupSort and its variants, MaxMin)."""
    try:
        from deel.torchlip import GroupSort, MaxMin
    except ImportError:
        return False
    return isinstance(layer, GroupSort | MaxMin)
