"""Interval bound propagation (IBP) in centre-radius form.

Affine map: ``c' = M c + b``, ``r' = |M| r``; ReLU: applied to both interval ends. The
specification ``C`` is folded into the last linear layer (``W' = C W``), which gives
tighter margin bounds than subtracting output intervals.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainables.bounds.ops import AffineOp, DenseOp, Op, ReLUOp, fuse_affine

Interval = tuple[Tensor, Tensor]


def propagate_intervals(
    ops: list[Op], lower: Tensor, upper: Tensor, start: int = 0
) -> tuple[Interval, list[Interval]]:
    """Propagate ``[lower, upper]`` (the input of ``ops[start]``) through ``ops[start:]``.

    Returns the output interval and the pre-activation interval of every ReLU met on the way
    (in order), which the linear-relaxation methods use as intermediate bounds. BatchNorm
    after a convolution is folded into it first (``fuse_affine``: the same map, fewer
    passes), and each ReLU step is one autograd node (``_IntervalReLU``).
    """
    centre, radius = (upper + lower) * 0.5, (upper - lower) * 0.5
    relu_inputs: list[Interval] = []
    for op in fuse_affine(ops[start:], dense=False):
        if isinstance(op, ReLUOp):
            low, high, centre, radius = _IntervalReLU.apply(centre, radius)
            relu_inputs.append((low, high))
        else:
            centre, radius = op.forward(centre), op.abs_forward(radius)
    return (centre - radius, centre + radius), relu_inputs


class _IntervalReLU(torch.autograd.Function):
    """``[c - r, c + r]`` through a ReLU in centre-radius form, with its hand-written
    gradient: the same values and derivatives as the composition of elementwise ops, with
    fewer passes over memory and two boolean masks saved instead of four tensors."""

    @staticmethod
    def forward(ctx, centre: Tensor, radius: Tensor):
        low, high = centre - radius, centre + radius
        relu_low, relu_high = low.clamp(min=0), high.clamp(min=0)
        ctx.save_for_backward(relu_low > 0, relu_high > 0)
        return low, high, (relu_high + relu_low) * 0.5, (relu_high - relu_low) * 0.5

    @staticmethod
    def backward(ctx, grad_low, grad_high, grad_centre, grad_radius):
        low_on, high_on = ctx.saved_tensors
        zero = grad_centre.new_zeros(())
        through_high = torch.where(high_on, (grad_centre + grad_radius) * 0.5, zero)
        through_low = torch.where(low_on, (grad_centre - grad_radius) * 0.5, zero)
        if grad_high is not None:
            through_high = through_high + grad_high
        if grad_low is not None:
            through_low = through_low + grad_low
        return through_high + through_low, through_high - through_low


def interval_bounds(ops: list[Op], lower: Tensor, upper: Tensor, C: Tensor | None) -> Interval:
    """IBP bounds of ``C f(x)`` (or of ``f(x)`` when ``C`` is None) over the input box."""
    return interval_bounds_with_relu_inputs(ops, lower, upper, C)[0]


def interval_bounds_with_relu_inputs(
    ops: list[Op], lower: Tensor, upper: Tensor, C: Tensor | None
) -> tuple[Interval, list[Interval]]:
    """``interval_bounds`` and the pre-activation interval of every ReLU, in one pass."""
    ops = fuse_affine(ops)  # a final BatchNorm folds into the last Linear, and C with it
    last = ops[-1] if ops else None
    if C is None or not isinstance(last, DenseOp):
        (low, high), relu_inputs = propagate_intervals(ops, lower, upper)
        return ((low, high) if C is None else apply_spec(C, low, high)), relu_inputs
    (low, high), relu_inputs = propagate_intervals(ops[:-1], lower, upper)
    return fold_spec(C, last, low, high), relu_inputs


def strip_diagonal_prefix(ops: list[Op], lower: Tensor, upper: Tensor) -> tuple[list[Op], Interval]:
    """The ops after the leading elementwise ones, and the box mapped through those.

    IBP is exact through elementwise affine maps (e.g. the input ``Normalize``), so a
    backward pass can start from the mapped box and skip them.
    """
    count = 0
    while count < len(ops) and isinstance(ops[count], AffineOp) and ops[count].diagonal:
        count += 1
    box, _ = propagate_intervals(ops[:count], lower, upper)
    return ops[count:], box


def fold_spec(C: Tensor, last: DenseOp, low: Tensor, high: Tensor) -> Interval:
    """Bounds of ``C (W z + b)`` for ``z`` in ``[low, high]`` with ``C W`` formed first."""
    weight = C @ last.weight  # [batch, specs, in]
    bias = C @ last.bias if last.bias is not None else 0.0
    centre, radius = (high + low) / 2, (high - low) / 2
    out_centre = torch.einsum("bsi,bi->bs", weight, centre) + bias
    out_radius = torch.einsum("bsi,bi->bs", weight.abs(), radius)
    return out_centre - out_radius, out_centre + out_radius


def apply_spec(C: Tensor, low: Tensor, high: Tensor) -> Interval:
    """Interval arithmetic for ``C z`` with ``z`` in ``[low, high]`` (no layer to fold into)."""
    centre, radius = (high + low) / 2, (high - low) / 2
    out_centre = torch.einsum("bso,bo->bs", C, centre)
    out_radius = torch.einsum("bso,bo->bs", C.abs(), radius)
    return out_centre - out_radius, out_centre + out_radius
