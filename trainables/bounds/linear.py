"""Backward linear relaxation (CROWN, Zhang et al. 2018) and CROWN-IBP (Zhang et al. 2020).

A lower bound of ``A f(x)`` is found by walking the layers backwards: affine layers are
exact (``A <- A M``, bias ``+= A b``); each ReLU with pre-activation bounds ``[l, u]`` is
replaced by a linear lower line (slope 1 if ``u > -l`` else 0, the adaptive choice) or the
upper chord ``u (z - l) / (u - l)``, chosen per coefficient sign so the result stays a
lower bound. At the input the linear function is minimised over the box in closed form:
``A c - |A| r``. Upper bounds are lower bounds of ``-A f(x)``.

CROWN-IBP takes the ReLU pre-activation bounds from IBP; full CROWN computes them with
backward passes as well, one neuron per specification row (see ``crown_relu_bounds``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trainables.bounds.interval import Interval, propagate_intervals
from trainables.bounds.ops import AffineOp, Op, ReLUOp

#: Default memory cap of full CROWN: elements of one backward coefficient tensor
#: ``[batch, rows, *layer_shape]`` (2**27 float32 values = 512 MiB; peaks are ~3x that).
DEFAULT_CHUNK_ELEMENTS = 2**27


@dataclass
class ReLURelaxation:
    """Linear lower and upper lines of one ReLU layer over its pre-activation bounds."""

    lower_slope: Tensor
    upper_slope: Tensor
    upper_intercept: Tensor

    @classmethod
    def from_bounds(cls, low: Tensor, high: Tensor) -> ReLURelaxation:
        unstable = (low < 0) & (high > 0)
        active = (low >= 0).to(low.dtype)
        # Division only where unstable (high - low > 0); a safe denominator elsewhere keeps
        # gradients finite through torch.where.
        gap = torch.where(unstable, high - low, torch.ones_like(high))
        chord = high / gap
        adaptive = (high > -low).to(low.dtype)
        return cls(
            lower_slope=torch.where(unstable, adaptive, active),
            upper_slope=torch.where(unstable, chord, active),
            upper_intercept=torch.where(unstable, -low * chord, torch.zeros_like(low)),
        )


def backward_lower_bound(
    ops: list[Op],
    A: Tensor,
    relaxations: list[ReLURelaxation],
    centre: Tensor,
    radius: Tensor,
) -> Tensor:
    """Lower bound of ``A g(x)`` over the box ``centre +- radius``, ``g`` = the ops in order.

    ``A`` has shape ``[batch, specs, *output_shape_of_g]``; ``relaxations`` holds one entry
    per ReLU in ``ops`` (in order). Returns ``[batch, specs]``.
    """
    bias = A.new_zeros(A.shape[:2])
    relu_index = len(relaxations)
    for op in reversed(ops):
        if isinstance(op, ReLUOp):
            relu_index -= 1
            relax = relaxations[relu_index]
            positive, negative = A.clamp(min=0), A.clamp(max=0)
            bias = bias + _contract(negative, relax.upper_intercept)
            A = positive * relax.lower_slope.unsqueeze(1) + negative * relax.upper_slope.unsqueeze(
                1
            )
        else:
            A, shift = op.backward(A)
            bias = bias + shift
    return _contract(A, centre) - _contract(A.abs(), radius) + bias


def _contract(A: Tensor, x: Tensor) -> Tensor:
    """``sum_i A[b, s, i] x[b, i]`` over all non-batch, non-spec dimensions."""
    return torch.einsum("bsi,bi->bs", A.flatten(2), x.flatten(1))


def two_sided(
    ops: list[Op], A: Tensor, relaxations: list[ReLURelaxation], centre: Tensor, radius: Tensor
) -> Interval:
    """Lower and upper bounds of ``A g(x)`` from one backward pass over ``[A; -A]``."""
    specs = A.shape[1]
    both = backward_lower_bound(ops, torch.cat([A, -A], dim=1), relaxations, centre, radius)
    return both[:, :specs], -both[:, specs:]


def output_spec(C: Tensor | None, output: Tensor) -> Tensor:
    """The spec ``C``, or the identity over the outputs when ``C`` is None."""
    if C is not None:
        return C
    batch, outputs = output.shape[0], output[0].numel()
    eye = torch.eye(outputs, dtype=output.dtype, device=output.device)
    return eye.expand(batch, outputs, outputs).reshape(batch, outputs, *output.shape[1:])


def crown_ibp_bounds(ops: list[Op], lower: Tensor, upper: Tensor, C: Tensor | None) -> Interval:
    """CROWN-IBP: IBP intermediate bounds, one backward pass for the output spec."""
    (out_low, _), relu_inputs = propagate_intervals(ops, lower, upper)
    relaxations = [ReLURelaxation.from_bounds(low, high) for low, high in relu_inputs]
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    return two_sided(ops, output_spec(C, out_low), relaxations, centre, radius)


def crown_bounds(
    ops: list[Op],
    lower: Tensor,
    upper: Tensor,
    C: Tensor | None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Interval:
    """Full CROWN: every ReLU's pre-activation bounds from backward passes, then the spec."""
    relu_bounds = crown_relu_bounds(ops, lower, upper, chunk_elements)
    relaxations = [ReLURelaxation.from_bounds(low, high) for low, high in relu_bounds]
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    (out_low, _), _ = propagate_intervals(ops, lower, upper)
    return two_sided(ops, output_spec(C, out_low), relaxations, centre, radius)


def crown_relu_bounds(
    ops: list[Op], lower: Tensor, upper: Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
) -> list[Interval]:
    """Pre-activation bounds of every ReLU layer by backward passes (CROWN's intermediates).

    Cost and memory, and how they are kept down:

    * Only neurons that are unstable (``l < 0 < u``) for some sample under the best bounds so
      far get a backward pass: a stable neuron's relaxation is exact whatever its bounds.
    * Each backward pass carries ``rows`` neurons at once (both signs); ``rows`` is chosen so
      that one coefficient tensor ``[batch, 2 rows, *widest_layer_shape]`` has at most
      ``chunk_elements`` entries. Time grows with (unstable neurons) x (cost of a backward
      pass through the layers below them). The coefficients are dense, so each neuron pays
      for full-image transposed convolutions: a randomly initialised CNN7 at 32x32 (about
      160k unstable neurons for 8 images) projects to about 3 hours on 2 CPU cores
      (tests/benchmarks/bench_bounds.py); certifiably trained and small networks have far
      fewer unstable neurons. Meant for evaluation, preferably on a GPU.
    * A prefix without an earlier ReLU and with at most one non-diagonal affine layer is
      bounded exactly by IBP, so no backward pass is spent there.
    * New bounds are intersected with the IBP bounds (both are sound), and IBP is re-run from
      each tightened layer so later layers start from tighter intervals.
    """
    _, relu_bounds = propagate_intervals(ops, lower, upper)
    relu_positions = [i for i, op in enumerate(ops) if isinstance(op, ReLUOp)]
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    relaxations: list[ReLURelaxation] = []
    for k, position in enumerate(relu_positions):
        prefix = ops[:position]
        if not _ibp_is_exact(prefix):
            low, high = _tighten(
                prefix, relu_bounds[k], relaxations, centre, radius, chunk_elements
            )
            relu_bounds[k] = (low, high)
            # Re-run IBP from this ReLU on, intersecting with what is known.
            _, later = propagate_intervals(ops, low, high, start=position)
            for j, (new_low, new_high) in enumerate(later[1:], start=k + 1):
                old_low, old_high = relu_bounds[j]
                relu_bounds[j] = (
                    torch.maximum(old_low, new_low),
                    torch.minimum(old_high, new_high),
                )
        relaxations.append(ReLURelaxation.from_bounds(*relu_bounds[k]))
    return relu_bounds


def _ibp_is_exact(prefix: list[Op]) -> bool:
    """IBP is exact through one non-diagonal affine map surrounded by diagonal ones."""
    if any(isinstance(op, ReLUOp) for op in prefix):
        return False
    return sum(not op.diagonal for op in prefix if isinstance(op, AffineOp)) <= 1


def _tighten(
    prefix: list[Op],
    bounds: Interval,
    relaxations: list[ReLURelaxation],
    centre: Tensor,
    radius: Tensor,
    chunk_elements: int,
) -> Interval:
    """Backward-pass bounds for the unstable neurons of one layer, chunked, intersected."""
    low, high = bounds
    batch, shape = low.shape[0], low.shape[1:]
    unstable = ((low < 0) & (high > 0)).flatten(1).any(dim=0).nonzero().flatten()
    if unstable.numel() == 0:
        return low, high
    widest = max(centre[0].numel(), *(_widest_output(prefix, centre)))
    rows = max(1, chunk_elements // (2 * batch * widest))
    low_flat, high_flat = low.flatten(1).clone(), high.flatten(1).clone()
    eye_rows = torch.arange(rows, device=low.device)
    for start in range(0, unstable.numel(), rows):
        neurons = unstable[start : start + rows]
        count = neurons.numel()
        A = low.new_zeros(batch, count, low_flat.shape[1])
        A[:, eye_rows[:count], neurons] = 1.0
        new_low, new_high = two_sided(
            prefix, A.reshape(batch, count, *shape), relaxations, centre, radius
        )
        low_flat[:, neurons] = torch.maximum(low_flat[:, neurons], new_low)
        high_flat[:, neurons] = torch.minimum(high_flat[:, neurons], new_high)
    return low_flat.reshape(low.shape), high_flat.reshape(high.shape)


def _widest_output(prefix: list[Op], centre: Tensor) -> list[int]:
    """Per-sample element counts of every activation in the prefix (for chunk sizing)."""
    sizes = []
    activation = centre[:1]
    for op in prefix:
        activation = torch.relu(activation) if isinstance(op, ReLUOp) else op.forward(activation)
        sizes.append(activation[0].numel())
    return sizes
