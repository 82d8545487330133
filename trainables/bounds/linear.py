"""Backward linear relaxation (CROWN, Zhang et al. 2018) and CROWN-IBP (Zhang et al. 2020).

A lower bound of ``A f(x)`` is found by walking the layers backwards: affine layers are
exact (``A <- A M``, bias ``+= A b``); each ReLU with pre-activation bounds ``[l, u]`` is
replaced by a linear lower line (slope 1 if ``u > -l`` else 0, the adaptive choice, or an
optimised slope in [0, 1], see ``alpha.py``) or the upper chord ``u (z - l) / (u - l)``,
chosen per coefficient sign so the result stays a lower bound. At the input the linear
function is minimised over the box in closed form: ``A c - |A| r``. Upper bounds are lower
bounds of ``-A f(x)``.

What each method computes (both backends, see ``lirpa.py``):

* CROWN-IBP: ReLU pre-activation bounds from IBP, one backward pass for the output spec.
* CROWN ("full CROWN"): every ReLU's pre-activation bounds from backward passes as well
  (``crown_relu_bounds``), each intersected with its IBP bound (both are sound; the
  neurons IBP proves stable get no backward pass at all).
* Both: the final bound is intersected with the IBP bound of the same spec, so neither is
  ever looser than IBP on any margin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from trainables.bounds.interval import (
    Interval,
    interval_bounds,
    interval_bounds_with_relu_inputs,
    propagate_intervals,
    strip_diagonal_prefix,
)
from trainables.bounds.ops import AffineOp, ChannelAffineOp, ConvOp, Op, ReLUOp, fuse_affine
from trainables.bounds.patches import Patches, conv_backward

#: Default memory cap of full CROWN: elements of one backward coefficient tensor
#: (2**27 float32 values = 512 MiB; peaks are ~3x that).
DEFAULT_CHUNK_ELEMENTS = 2**27

#: Backward coefficients: dense ``[batch or 1, rows, *shape]`` or patches (flat rows only).
Coefficients = Tensor | Patches


@dataclass
class ReLURelaxation:
    """Linear lower and upper lines of one ReLU layer over its pre-activation bounds.

    ``lower_slope`` is ``[batch, *shape]``, or ``[batch, rows, *shape]`` when it is chosen
    per backward row (alpha-CROWN); ``split_coefficient`` (beta-CROWN, ``[batch, rows,
    *shape]``) is added to the coefficients of the pre-activation: the Lagrangian term of
    the split constraints of branch and bound (``trainables.certify.bab``).
    """

    lower_slope: Tensor
    upper_slope: Tensor
    upper_intercept: Tensor
    split_coefficient: Tensor | None = None

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

    @property
    def per_row(self) -> bool:
        return self.lower_slope.dim() == self.upper_slope.dim() + 1

    def with_lower_slopes(self, alpha: Tensor, unstable: Tensor) -> ReLURelaxation:
        """Per-row lower slopes ``alpha`` ``[batch, rows, *shape]`` on the unstable neurons
        (``unstable``: ``[batch, *shape]``); stable neurons keep their exact lines."""
        slope = torch.where(unstable.unsqueeze(1), alpha, self.lower_slope.unsqueeze(1))
        return replace(self, lower_slope=slope)


def backward_lower_bound(
    ops: list[Op],
    A: Coefficients,
    relaxations: list[ReLURelaxation],
    centre: Tensor,
    radius: Tensor,
    samples: Tensor | None = None,
    relu_coefficients: list[Tensor] | None = None,
) -> Tensor:
    """Lower bound of ``A g(x)`` over the box ``centre +- radius``, ``g`` = the ops in order.

    ``A`` has shape ``[batch, rows, *output_shape_of_g]``; with ``samples`` (``[groups]``,
    the sample of each group) it is ``[groups, rows, ...]`` instead, and ``Patches`` carry
    their own samples. The leading dimension may be 1 while ``A`` is the same for every
    sample or group. ``relaxations`` holds one entry per ReLU in ``ops`` (in order).
    ``relu_coefficients``, when given, receives the (dense) coefficients on each ReLU's
    output, in forward order, then the coefficients on the input (branch and bound scores
    neurons with the former and reads each bound's minimiser off the latter).
    Returns ``[batch or groups, rows]``.
    """
    bias: Tensor | float = 0.0
    relu_index = len(relaxations)
    for op in reversed(ops):
        if isinstance(op, ReLUOp):
            relu_index -= 1
            if relu_coefficients is not None:
                relu_coefficients.insert(0, A)
            A, shift = _relu_backward(A, relaxations[relu_index], samples)
        elif isinstance(A, Patches):
            samples = A.samples  # kept for the dense form, should patches stop paying
            A, shift = _patches_backward(op, A)
        else:
            A, shift = op.backward(A)
        bias = bias + shift
    if relu_coefficients is not None:
        relu_coefficients.append(A)
    return _concretize(A, centre, radius, samples) + bias


def _spread(values: Tensor, samples: Tensor | None, A: Coefficients) -> Tensor:
    """A per-sample map ``[batch, *shape]`` in the layout of ``A`` (broadcastable to it)."""
    if isinstance(A, Patches):
        return A.windows(values)
    if samples is None:
        return values.unsqueeze(1)
    return values[samples].unsqueeze(1)


def _relu_backward(
    A: Coefficients, relax: ReLURelaxation, samples: Tensor | None
) -> tuple[Coefficients, Tensor]:
    """``A`` through the relaxed ReLU: lower line where ``A >= 0``, upper chord elsewhere."""
    values = A.values if isinstance(A, Patches) else A
    if relax.per_row:
        if samples is not None or isinstance(A, Patches):
            raise ValueError("per-row ReLU slopes need the batched coefficient layout")
        lower = relax.lower_slope
    else:
        lower = _spread(relax.lower_slope, samples, A)
    upper = _spread(relax.upper_slope, samples, A)
    intercept = _spread(relax.upper_intercept, samples, A)
    positive = values.clamp(min=0)
    # sum (A - A+) * intercept, without materialising the product.
    bias = _contract_rows(values, intercept) - _contract_rows(positive, intercept)
    new = torch.addcmul(values * upper, positive, lower - upper)
    if relax.split_coefficient is not None:
        new = new + relax.split_coefficient
    return (A.with_values(new) if isinstance(A, Patches) else new), bias


def _contract_rows(values: Tensor, per_group: Tensor) -> Tensor:
    """``sum_i values[g, r, i] per_group[g, 0, i]``: ``[groups, rows]`` (broadcasting g)."""
    flat = per_group.flatten(2).transpose(1, 2)  # [g, i, 1]
    return (values.flatten(2) @ flat).squeeze(-1)


def _patches_backward(op: AffineOp, A: Patches) -> tuple[Coefficients, Tensor]:
    """One affine op on patches; falls back to dense when patches no longer pay."""
    if isinstance(op, ConvOp):
        moved, shift = conv_backward(
            A, op.weight, op.bias, op.stride, op.padding, op.dilation, op.groups, op.in_shape
        )
        return (moved.to_dense() if moved.fits_dense() else moved), shift
    A = A.masked()
    if isinstance(op, ChannelAffineOp) and op.spatial_dims == 2:
        values = A.values  # channels last
        shift = values.sum(dim=(2, 3)) @ op.shift
        return A.with_values(values * op.scale), shift
    return op.backward(A.to_dense())


def _concretize(A: Coefficients, centre: Tensor, radius: Tensor, samples: Tensor | None) -> Tensor:
    """``min`` of ``A x`` over the box: ``A c - |A| r``."""
    if isinstance(A, Patches):
        return _contract_rows(A.values, A.windows(centre)) - _contract_rows(
            A.values.abs(), A.windows(radius)
        )
    if samples is not None:
        centre, radius = centre[samples], radius[samples]
    return _contract(A, centre) - _contract(A.abs(), radius)


def _contract(A: Tensor, x: Tensor) -> Tensor:
    """``sum_i A[b, s, i] x[b, i]`` (``A`` may have batch 1): ``[batch, specs]``."""
    return (A.flatten(2) @ x.flatten(1).unsqueeze(-1)).squeeze(-1)


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


def intersect(bounds: Interval, other: Interval) -> Interval:
    """The tighter of two sound bounds, elementwise."""
    return torch.maximum(bounds[0], other[0]), torch.minimum(bounds[1], other[1])


def prepare(ops: list[Op], lower: Tensor, upper: Tensor) -> tuple[list[Op], Tensor, Tensor]:
    """Ops and box for backward passes: channel ops fused, the elementwise prefix applied."""
    ops, (lower, upper) = strip_diagonal_prefix(fuse_affine(ops), lower, upper)
    return ops, lower, upper


def crown_ibp_bounds(ops: list[Op], lower: Tensor, upper: Tensor, C: Tensor | None) -> Interval:
    """CROWN-IBP: IBP intermediate bounds, one backward pass for the output spec, ∩ IBP."""
    ops, lower, upper = prepare(ops, lower, upper)
    ibp, relu_inputs = interval_bounds_with_relu_inputs(ops, lower, upper, C)
    relaxations = [ReLURelaxation.from_bounds(low, high) for low, high in relu_inputs]
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    bounds = two_sided(ops, output_spec(C, ibp[0]), relaxations, centre, radius)
    return intersect(bounds, ibp)


def crown_bounds(
    ops: list[Op],
    lower: Tensor,
    upper: Tensor,
    C: Tensor | None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Interval:
    """Full CROWN: every ReLU's pre-activation bounds from backward passes, then the spec."""
    ops, lower, upper = prepare(ops, lower, upper)
    relu_bounds = crown_relu_bounds(ops, lower, upper, chunk_elements)
    return spec_bounds(ops, lower, upper, C, relu_bounds)


def spec_bounds(
    ops: list[Op], lower: Tensor, upper: Tensor, C: Tensor | None, relu_bounds: list[Interval]
) -> Interval:
    """Bounds of the spec from given ReLU pre-activation bounds, intersected with IBP."""
    ops, lower, upper = prepare(ops, lower, upper)
    relaxations = [ReLURelaxation.from_bounds(low, high) for low, high in relu_bounds]
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    ibp = interval_bounds(ops, lower, upper, C)
    bounds = two_sided(ops, output_spec(C, ibp[0]), relaxations, centre, radius)
    return intersect(bounds, ibp)


def crown_relu_bounds(
    ops: list[Op],
    lower: Tensor,
    upper: Tensor,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    patches: bool = True,
) -> list[Interval]:
    """Pre-activation bounds of every ReLU layer by backward passes (CROWN's intermediates).

    Each bound is CROWN's intersected with IBP's. Cost and memory, and how they are kept
    down:

    * Only (sample, neuron) pairs that IBP leaves unstable (``l < 0 < u``) get a backward
      pass: a stable neuron's relaxation is exact whatever its bounds. Each pair is one
      row of the pass (both signs), so stable pairs cost nothing even when the same neuron
      is unstable for another sample.
    * Neurons of convolutional layers start in patches form (``patches.py``): their
      coefficients live on their receptive field only, until that covers the image.
    * Rows are processed in chunks whose largest coefficient tensor has at most
      ``chunk_elements`` entries.
    * ``patches=False`` keeps every coefficient dense (same bounds up to rounding; slower).
    * A prefix without an earlier ReLU and with at most one non-diagonal affine layer is
      bounded exactly by IBP, so no backward pass is spent there.
    * Channel ops (BatchNorm) are folded into the layer before them and the elementwise
      prefix (``Normalize``) into the box (``prepare``): fewer passes, the same bounds.
    """
    ops, lower, upper = prepare(ops, lower, upper)
    _, relu_bounds = propagate_intervals(ops, lower, upper)
    relu_positions = [i for i, op in enumerate(ops) if isinstance(op, ReLUOp)]
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    relaxations: list[ReLURelaxation] = []
    for k, position in enumerate(relu_positions):
        prefix = ops[:position]
        if not ibp_is_exact(prefix):
            relu_bounds[k] = _tighten(
                prefix, relu_bounds[k], relaxations, centre, radius, chunk_elements, patches
            )
        relaxations.append(ReLURelaxation.from_bounds(*relu_bounds[k]))
    return relu_bounds


def ibp_is_exact(prefix: list[Op]) -> bool:
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
    patches: bool,
) -> Interval:
    """Backward-pass bounds of the unstable neurons of one layer, intersected with ``bounds``.

    Rows are grouped so that each relaxation window is read once per group (see
    ``_PositionRows``, ``_NeuronRows`` and ``_DenseRows``), and processed in chunks of at
    most ``chunk_elements`` coefficients.
    """
    low, high = bounds
    unstable = (low < 0) & (high > 0)
    if not unstable.any():
        return low, high
    low, high = low.clone(), high.clone()
    convolutional = patches and unstable.dim() == 4
    plan = _row_plan(unstable, low) if convolutional else _DenseRows(unstable)
    per_unit = plan.rows_per_unit * row_elements(prefix, centre, patches=convolutional)
    step = max(1, chunk_elements // per_unit)
    for first in range(0, plan.units, step):
        cut = slice(first, min(first + step, plan.units))
        A, samples = plan.start(cut, low)
        result = backward_lower_bound(prefix, A, relaxations, centre, radius, samples)
        plan.store(cut, result, low, high)
    return low, high


#: Patches rows per (sample, position) group cover every channel; when fewer than this
#: fraction of them are unstable, one group per unstable neuron is cheaper.
POSITION_GROUP_FRACTION = 0.4


def _row_plan(unstable: Tensor, like: Tensor) -> _PositionRows | _NeuronRows:
    positions = unstable.any(dim=1)
    covered = int(positions.sum()) * unstable.shape[1]
    if int(unstable.sum()) >= POSITION_GROUP_FRACTION * covered:
        return _PositionRows(unstable, positions, like)
    return _NeuronRows(unstable, like)


class _PositionRows:
    """Patches; a unit is a (sample, position) with an unstable channel: +-every channel."""

    def __init__(self, unstable: Tensor, positions: Tensor, like: Tensor) -> None:
        self.shape = tuple(unstable.shape[1:])
        self.channels = unstable.shape[1]
        self.samples, self.ys, self.xs = positions.nonzero(as_tuple=True)
        self.units, self.rows_per_unit = self.samples.numel(), 2 * self.channels
        eye = torch.eye(self.channels, dtype=like.dtype, device=like.device)
        self.unit = torch.cat([eye, -eye]).view(1, 2 * self.channels, 1, 1, self.channels)

    def start(self, cut: slice, like: Tensor) -> tuple[Patches, None]:
        return Patches(self.unit, self.ys[cut], self.xs[cut], self.samples[cut], self.shape), None

    def store(self, cut: slice, result: Tensor, low: Tensor, high: Tensor) -> None:
        index = (self.samples[cut], slice(None), self.ys[cut], self.xs[cut])
        low[index] = torch.maximum(low[index], result[:, : self.channels])
        high[index] = torch.minimum(high[index], -result[:, self.channels :])


class _NeuronRows:
    """Patches; a unit is one unstable (sample, channel, position): its two signs."""

    def __init__(self, unstable: Tensor, like: Tensor) -> None:
        self.shape = tuple(unstable.shape[1:])
        self.samples, self.cs, self.ys, self.xs = unstable.nonzero(as_tuple=True)
        self.units, self.rows_per_unit = self.samples.numel(), 2
        self.signs = torch.tensor([1.0, -1.0], dtype=like.dtype, device=like.device)

    def start(self, cut: slice, like: Tensor) -> tuple[Patches, None]:
        channels = self.cs[cut]
        values = like.new_zeros(channels.numel(), 2, 1, 1, self.shape[0])
        values[torch.arange(channels.numel(), device=like.device), :, 0, 0, channels] = self.signs
        return Patches(values, self.ys[cut], self.xs[cut], self.samples[cut], self.shape), None

    def store(self, cut: slice, result: Tensor, low: Tensor, high: Tensor) -> None:
        index = (self.samples[cut], self.cs[cut], self.ys[cut], self.xs[cut])
        low[index] = torch.maximum(low[index], result[:, 0])
        high[index] = torch.minimum(high[index], -result[:, 1])


class _DenseRows:
    """Dense; a unit is a neuron unstable for some sample: its two signs, for every sample."""

    def __init__(self, unstable: Tensor) -> None:
        self.batch, self.shape = unstable.shape[0], tuple(unstable.shape[1:])
        self.neurons = unstable.flatten(1).any(dim=0).nonzero().flatten()
        self.units, self.rows_per_unit = self.neurons.numel(), 2 * self.batch

    def start(self, cut: slice, like: Tensor) -> tuple[Tensor, None]:
        neurons = self.neurons[cut]
        count, size = neurons.numel(), int(torch.Size(self.shape).numel())
        A = like.new_zeros(1, 2 * count, size)
        rows = torch.arange(count, device=like.device)
        A[0, rows, neurons] = 1.0
        A[0, rows + count, neurons] = -1.0
        return A.view(1, 2 * count, *self.shape), None

    def store(self, cut: slice, result: Tensor, low: Tensor, high: Tensor) -> None:
        neurons, count = self.neurons[cut], self.neurons[cut].numel()
        low_flat, high_flat = low.view(self.batch, -1), high.view(self.batch, -1)
        low_flat[:, neurons] = torch.maximum(low_flat[:, neurons], result[:, :count])
        high_flat[:, neurons] = torch.minimum(high_flat[:, neurons], -result[:, count:])


def row_elements(prefix: list[Op], reference: Tensor, patches: bool) -> int:
    """The largest per-row coefficient size of a backward pass through ``prefix``.

    ``reference`` is one input sample (shapes are traced on it). Starting from one neuron of
    the prefix's output, in patches form when ``patches``, else dense.
    """
    sizes, activation = [], reference[:1]
    for op in prefix:
        sizes.append(activation[0].numel())
        activation = torch.relu(activation) if isinstance(op, ReLUOp) else op.forward(activation)
    sizes.append(activation[0].numel())
    if not patches:
        return max(sizes)
    channels, window = activation.shape[1], (1, 1)
    largest = channels
    for index in range(len(prefix) - 1, -1, -1):
        op = prefix[index]
        if isinstance(op, ConvOp):
            window = tuple(
                (w - 1) * s + d * (k - 1) + 1
                for w, s, d, k in zip(
                    window, op.stride, op.dilation, op.weight.shape[2:], strict=True
                )
            )
            channels, height, width = op.in_shape
            if window[0] * window[1] >= height * width:
                return max(largest, *sizes[: index + 1])
        elif not isinstance(op, ReLUOp | ChannelAffineOp):
            return max(largest, *sizes[: index + 2])
        largest = max(largest, channels * window[0] * window[1])
    return largest
