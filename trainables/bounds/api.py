"""The one entry point to bound propagation, and the certification helper built on it."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from trainables.bounds import alpha
from trainables.bounds.interval import interval_bounds
from trainables.bounds.linear import DEFAULT_CHUNK_ELEMENTS, crown_bounds, crown_ibp_bounds
from trainables.bounds.lirpa import lirpa_bounds
from trainables.bounds.ops import BatchStatistics, linearize
from trainables.bounds.spec import margin_spec
from trainables.models.modes import eval_mode

Method = Literal["ibp", "crown-ibp", "crown", "alpha-crown"]
METHODS: tuple[str, ...] = ("ibp", "crown-ibp", "crown", "alpha-crown")
BACKENDS: tuple[str, ...] = ("native", "auto_lirpa")


def compute_bounds(
    model: nn.Sequential,
    x_lower: Tensor,
    x_upper: Tensor,
    method: Method = "ibp",
    C: Tensor | None = None,
    *,
    bn_reference: Tensor | None = None,
    bn_statistics: BatchStatistics | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    backend: Literal["native", "auto_lirpa"] = "native",
    alpha_iterations: int = alpha.ITERATIONS,
    alpha_lr: float = alpha.LEARNING_RATE,
    alpha_intermediate: bool = True,
) -> tuple[Tensor, Tensor]:
    """Sound lower and upper bounds of ``C f(x)`` (or ``f(x)``) for ``x`` in the input box.

    Args:
        model: an ``nn.Sequential`` (nesting allowed) of Linear, Conv2d, ReLU, Flatten,
            BatchNorm1d/2d, AvgPool2d, Normalize and Identity layers.
        x_lower, x_upper: the box, ``[batch, *input_shape]``, ``x_lower <= x_upper``. Clip
            it to the data range before calling (``certify`` does).
        method: "ibp", "crown-ibp" (IBP intermediates, linear relaxation at the output),
            "crown" (linear relaxation everywhere; evaluation only, see ``crown_relu_bounds``)
            or "alpha-crown" (CROWN with optimised ReLU slopes, ``alpha.py``; evaluation
            only, small networks). Every linear-relaxation result is intersected with IBP.
        C: optional spec ``[batch, specs, outputs]``; the result is then ``[batch, specs]``.
        bn_reference: the batch whose statistics BatchNorm layers in train mode use (the
            clean batch of the training step); default: the box centre. Running statistics
            are never updated here. Eval-mode BatchNorm uses its running statistics.
        bn_statistics: ``(mean, biased var)`` per BatchNorm module, used instead of
            ``bn_reference``'s statistics by train-mode BatchNorm (no extra forward pass).
        chunk_elements: memory cap of full CROWN (see ``linear.DEFAULT_CHUNK_ELEMENTS``).
        backend: "native" (certsweep's own bounds) or "auto_lirpa" (needs auto_LiRPA >= 0.5).
        alpha_iterations, alpha_lr: alpha-CROWN's bound evaluations (>= 1) and Adam step
            size (defaults: auto_LiRPA's 20 and 0.5).
        alpha_intermediate: alpha-CROWN also optimises the slopes of the intermediate
            layers' backward passes (default, as auto_LiRPA); False keeps CROWN's
            intermediate bounds and optimises the output's slopes only (much cheaper).

    Differentiable with respect to the weights (and the box) for every method except
    "alpha-crown", whose result carries no gradient.
    """
    _check_inputs(x_lower, x_upper, method, backend)
    if C is not None:
        _check_spec(C, x_lower)
    if method == "alpha-crown":
        alpha.check_options(alpha_iterations, alpha_lr, alpha.LEARNING_RATE_DECAY)
    if backend == "auto_lirpa":
        return lirpa_bounds(model, x_lower, x_upper, method, C, alpha_iterations, alpha_lr)
    reference = (x_lower + x_upper) / 2 if bn_reference is None else bn_reference
    ops, output = linearize(model, reference, bn_statistics)
    if C is not None and output[0].numel() != C.shape[2]:
        raise ValueError(
            f"C has {C.shape[2]} columns but the model has {output[0].numel()} outputs"
        )
    if method == "ibp":
        return interval_bounds(ops, x_lower, x_upper, C)
    if method == "crown-ibp":
        return crown_ibp_bounds(ops, x_lower, x_upper, C)
    if method == "crown":
        return crown_bounds(ops, x_lower, x_upper, C, chunk_elements)
    return alpha.alpha_crown(
        ops,
        x_lower,
        x_upper,
        C,
        iterations=alpha_iterations,
        lr=alpha_lr,
        optimize_intermediate=alpha_intermediate,
        chunk_elements=chunk_elements,
    ).bounds


def certify(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: float,
    method: Method = "crown-ibp",
    **bound_options: object,
) -> Tensor:
    """Per-sample certified mask for the L-inf ball of radius ``eps`` around ``x``.

    The box is clipped to the pixel range [0, 1]; a sample is certified iff the lower bound
    of every margin ``z_y - z_j`` is strictly positive. The model is evaluated in eval mode
    (its mode is restored afterwards), without gradients.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    with torch.no_grad(), eval_mode(model):
        num_classes = model(x[:1]).shape[-1]
        C = margin_spec(y, num_classes, dtype=x.dtype)
        lower, upper = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
        lb, _ = compute_bounds(model, lower, upper, method, C, **bound_options)
    return (lb > 0).all(dim=1)


def _check_inputs(x_lower: Tensor, x_upper: Tensor, method: str, backend: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose one of {', '.join(METHODS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown bound backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if x_lower.shape != x_upper.shape:
        raise ValueError(
            f"x_lower and x_upper must have the same shape, got {tuple(x_lower.shape)} "
            f"and {tuple(x_upper.shape)}"
        )
    if x_lower.dim() < 2:
        raise ValueError(f"inputs need a batch dimension, got shape {tuple(x_lower.shape)}")
    inverted = x_lower > x_upper
    if inverted.any():
        worst = (x_lower - x_upper).max().item()
        raise ValueError(
            f"x_lower > x_upper at {int(inverted.sum())} entries (by up to {worst:.3g}); "
            "the box must satisfy x_lower <= x_upper"
        )


def _check_spec(C: Tensor, x_lower: Tensor) -> None:
    if C.dim() != 3 or C.shape[0] != x_lower.shape[0]:
        raise ValueError(
            f"C must have shape [batch={x_lower.shape[0]}, specs, outputs], got {tuple(C.shape)}"
        )


__all__ = ["BACKENDS", "METHODS", "certify", "compute_bounds", "margin_spec"]
