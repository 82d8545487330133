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
    (in order), which the linear-relaxation methods use as intermediate bounds. Channel ops
    are folded into the layer before them first (``fuse_affine``: the same map, fewer passes).
    """
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    relu_inputs: list[Interval] = []
    for op in fuse_affine(ops[start:]):
        if isinstance(op, ReLUOp):
            low, high = centre - radius, centre + radius
            relu_inputs.append((low, high))
            low, high = torch.relu(low), torch.relu(high)
            centre, radius = (high + low) / 2, (high - low) / 2
        else:
            centre, radius = op.forward(centre), op.abs_forward(radius)
    return (centre - radius, centre + radius), relu_inputs


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
