"""alpha-CROWN: CROWN whose lower ReLU slopes are optimised by projected gradient ascent.

Xu et al., "Fast and Complete: Enabling Complete Neural Network Verification with Rapid and
Massively Parallel Incomplete Verifiers" (ICLR 2021), as auto_LiRPA implements it
(auto_LiRPA/optimized_bounds.py: ``_get_optimized_bounds`` and the defaults in
``default_optimize_bound_args``). Any lower line ``a z`` with ``a`` in [0, 1] bounds an
unstable ReLU from below, so every choice of slopes gives a sound bound; alpha-CROWN
searches for the slopes that give the tightest one:

* one slope per unstable neuron *and per row of the backward pass that uses it*: every
  output spec row (both signs: lower and upper bounds), and every intermediate neuron whose
  bounds are computed by a backward pass (auto_LiRPA's alpha of shape ``(2, spec, batch,
  *shape)`` per start node);
* initialised with CROWN's adaptive slopes (auto_LiRPA ``init_alpha``), so the first
  iteration reproduces CROWN;
* Adam on the sum of the lower bounds (the loss ``-sum lb``), learning rate 0.5, decayed by
  0.98 per iteration (``ExponentialLR``), 20 iterations (bound evaluations; the last takes no
  step), slopes clipped back to [0, 1] after each step;
* intermediate bounds are recomputed with their own slopes in every iteration
  (auto_LiRPA with ``fix_interm_bounds`` and no given intermediate bounds), intersected with
  IBP (``crown_relu_bounds``' semantics); ``optimize_intermediate=False`` keeps CROWN's
  intermediate bounds fixed and optimises the output slopes only (much cheaper);
* the best bound of every spec row (and of every intermediate neuron) over the iterations is
  kept (``keep_best``); each iteration's bound is sound, so the elementwise best is too.

Deviations, on purpose: the result is also intersected with CROWN's and IBP's bounds of the
same spec, so alpha-CROWN is never looser than either; lower and upper bounds are optimised
in one run (one loss over both signs) instead of two.

Memory grows with (samples) x (rows of every backward pass) x (neurons of every ReLU
before it): meant for small networks (batches are split to stay under ``chunk_elements``;
small convolutions run as matrices, ``ops.densify``).
The result carries no gradient (evaluation only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from trainables.bounds.interval import Interval, interval_bounds_with_relu_inputs
from trainables.bounds.linear import (
    DEFAULT_CHUNK_ELEMENTS,
    ReLURelaxation,
    backward_lower_bound,
    crown_relu_bounds,
    ibp_is_exact,
    intersect,
    output_spec,
    prepare,
    spec_bounds,
)
from trainables.bounds.ops import Op, ReLUOp, densify, detached

ITERATIONS = 20
LEARNING_RATE = 0.5
LEARNING_RATE_DECAY = 0.98


@dataclass
class AlphaCrownResult:
    """The optimised bounds of the spec and the best ReLU pre-activation bounds found."""

    bounds: Interval
    relu_bounds: list[Interval]


def alpha_crown(
    ops: list[Op],
    lower: Tensor,
    upper: Tensor,
    C: Tensor | None,
    *,
    iterations: int = ITERATIONS,
    lr: float = LEARNING_RATE,
    lr_decay: float = LEARNING_RATE_DECAY,
    optimize_intermediate: bool = True,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> AlphaCrownResult:
    """Bounds of ``C f(x)`` (or ``f(x)``) over the box by alpha-CROWN (module docstring),
    with its intermediate bounds (``relu_bounds`` feed branch and bound)."""
    check_options(iterations, lr, lr_decay)
    with torch.no_grad():
        ops, lower, upper = prepare(detached(ops), lower.detach(), upper.detach())
        ibp, ibp_relu = interval_bounds_with_relu_inputs(ops, lower, upper, C)
        crown_relu = crown_relu_bounds(ops, lower, upper, chunk_elements)
        crown = spec_bounds(ops, lower, upper, C, crown_relu)
        ops = densify(ops)
    spec = output_spec(C, ibp[0]).detach()
    problem = _Problem(ops, lower, upper, spec, ibp, ibp_relu, crown_relu, crown)
    per_sample = max(1, problem.alpha_elements(optimize_intermediate))
    if 10 * per_sample > chunk_elements:
        raise ValueError(
            f"alpha-CROWN needs about {10 * per_sample:,} slope and coefficient entries per "
            f"sample here, more than chunk_elements={chunk_elements:,}: optimise the output's "
            "slopes only (alpha_intermediate=False) or raise chunk_elements"
        )
    step = max(1, chunk_elements // (10 * per_sample))
    parts = [
        _optimise(problem.slice(slice(first, first + step)), iterations, lr, lr_decay,
                  optimize_intermediate)
        for first in range(0, lower.shape[0], step)
    ]  # fmt: skip
    relu_bounds = [_concat([p.relu_bounds[k] for p in parts]) for k in range(len(crown_relu))]
    return AlphaCrownResult(_concat([p.bounds for p in parts]), relu_bounds)


def projected_step(
    loss: Tensor,
    parameters: list[Tensor],
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    project: Callable[[], None],
) -> None:
    """One step of projected gradient descent on ``loss`` (the negated bound): its
    gradients (None where a parameter is unused), the optimiser and LR-schedule steps, then
    ``project`` back onto the feasible set, without autograd. Shared with ``certify.bab``."""
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    for parameter, grad in zip(parameters, grads, strict=True):
        parameter.grad = grad
    optimizer.step()
    schedule.step()
    with torch.no_grad():
        project()


def _clamp_slopes(slopes: list[Tensor]) -> None:
    for slope in slopes:
        slope.clamp_(0.0, 1.0)


def _concat(parts: list[Interval]) -> Interval:
    return torch.cat([low for low, _ in parts]), torch.cat([high for _, high in parts])


def check_options(iterations: int, lr: float, lr_decay: float) -> None:
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"alpha-CROWN iterations must be an integer >= 1, got {iterations!r}")
    if not lr > 0:
        raise ValueError(f"alpha-CROWN lr must be > 0, got {lr!r}")
    if not 0 < lr_decay <= 1:
        raise ValueError(f"alpha-CROWN lr_decay must lie in (0, 1], got {lr_decay!r}")


@dataclass
class _Problem:
    """One batch, prepared: ops, box, spec, and the IBP and CROWN bounds to start from."""

    ops: list[Op]
    lower: Tensor
    upper: Tensor
    spec: Tensor
    ibp: Interval
    ibp_relu: list[Interval]
    crown_relu: list[Interval]
    crown: Interval

    @property
    def positions(self) -> list[int]:
        return [i for i, op in enumerate(self.ops) if isinstance(op, ReLUOp)]

    def optimised_layers(self) -> list[int]:
        """ReLU layers whose bounds come from backward passes (and have unstable neurons)."""
        return [
            k
            for k, position in enumerate(self.positions)
            if not ibp_is_exact(self.ops[:position])
            and _unstable_neurons(*self.crown_relu[k]).numel()
        ]

    def alpha_elements(self, optimize_intermediate: bool) -> int:
        """Slopes per sample (for chunking the batch)."""
        sizes = [int(low[0].numel()) for low, _ in self.crown_relu]
        total = 2 * self.spec.shape[1] * sum(sizes)
        if optimize_intermediate:
            for k in self.optimised_layers():
                total += 2 * _unstable_neurons(*self.crown_relu[k]).numel() * sum(sizes[:k])
        return total

    def slice(self, cut: slice) -> _Problem:
        def pair(bounds: Interval) -> Interval:
            return bounds[0][cut], bounds[1][cut]

        return _Problem(
            self.ops,
            self.lower[cut],
            self.upper[cut],
            self.spec[cut],
            pair(self.ibp),
            [pair(b) for b in self.ibp_relu],
            [pair(b) for b in self.crown_relu],
            pair(self.crown),
        )


def _unstable_neurons(low: Tensor, high: Tensor) -> Tensor:
    """Flat indices of the neurons unstable for some sample."""
    return ((low < 0) & (high > 0)).flatten(1).any(dim=0).nonzero().flatten()


@dataclass
class _Start:
    """The rows of one backward pass: ReLU layer ``layer`` (None: the output spec)."""

    layer: int | None
    A: Tensor  # [1 or batch, rows, *shape]
    neurons: Tensor | None  # flat neuron index of each row pair (intermediate layers)
    alphas: dict[int, Tensor]  # ReLU layer before it -> [batch, rows, its unstable neurons]


def _optimise(
    problem: _Problem, iterations: int, lr: float, lr_decay: float, optimize_intermediate: bool
) -> AlphaCrownResult:
    starts = _starts(problem, optimize_intermediate)
    parameters = [alpha for start in starts for alpha in start.alphas.values()]
    if not parameters:  # nothing unstable: CROWN is exact up to its relaxation-free bound
        return AlphaCrownResult(problem.crown, problem.crown_relu)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, lr_decay)
    best = problem.crown
    best_relu = list(problem.crown_relu)
    centre, radius = (problem.upper + problem.lower) / 2, (problem.upper - problem.lower) / 2
    for iteration in range(iterations):
        with torch.enable_grad():
            relu_bounds, raw = _evaluate(problem, starts, centre, radius)
            loss = -raw.sum()
        specs = problem.spec.shape[1]
        with torch.no_grad():
            found = intersect((raw[:, :specs], -raw[:, specs:]), problem.ibp)
            best = intersect(best, found)
            best_relu = [intersect(b, r) for b, r in zip(best_relu, relu_bounds, strict=True)]
        if iteration == iterations - 1:
            break
        projected_step(loss, parameters, optimizer, schedule, lambda: _clamp_slopes(parameters))
    return AlphaCrownResult(best, [(low.detach(), high.detach()) for low, high in best_relu])


def _starts(problem: _Problem, optimize_intermediate: bool) -> list[_Start]:
    """Backward-pass rows and their slopes, initialised with CROWN's adaptive choice.

    Slopes exist only for the neurons unstable under CROWN (for some sample), as
    auto_LiRPA's sparse alphas: the other neurons stay stable in every iteration.
    """
    initial = [
        ReLURelaxation.from_bounds(low, high).lower_slope.flatten(1)
        for low, high in problem.crown_relu
    ]
    unstable = [_unstable_neurons(low, high) for low, high in problem.crown_relu]

    def slopes(layers: int, rows: int) -> dict[int, Tensor]:
        return {
            j: initial[j][:, unstable[j]].unsqueeze(1).expand(-1, rows, -1).clone().requires_grad_()
            for j in range(layers)
            if unstable[j].numel()
        }

    starts = []
    if optimize_intermediate:
        for k in problem.optimised_layers():
            low = problem.crown_relu[k][0]
            neurons = unstable[k]
            count, size = neurons.numel(), low[0].numel()
            A = low.new_zeros(1, 2 * count, size)
            rows = torch.arange(count, device=low.device)
            A[0, rows, neurons] = 1.0
            A[0, rows + count, neurons] = -1.0
            A = A.view(1, 2 * count, *low.shape[1:])
            starts.append(_Start(k, A, neurons, slopes(k, 2 * count)))
    spec = torch.cat([problem.spec, -problem.spec], dim=1)
    starts.append(_Start(None, spec, None, slopes(len(problem.crown_relu), spec.shape[1])))
    return starts


def _row_slopes(
    relaxation: ReLURelaxation, alpha: Tensor, neurons: Tensor, unstable: Tensor
) -> ReLURelaxation:
    """``relaxation`` with lower slopes per row: ``alpha`` ``[batch, rows, len(neurons)]`` on
    ``neurons`` where they are unstable (``unstable``: ``[batch, *shape]``), exact elsewhere."""
    base = relaxation.lower_slope.flatten(1)  # [batch, N]
    rows = alpha.shape[1]
    picked = torch.where(
        unstable.flatten(1)[:, neurons].unsqueeze(1), alpha, base[:, None, neurons]
    )
    full = base.unsqueeze(1).expand(-1, rows, -1).index_copy(2, neurons, picked)
    shape = relaxation.lower_slope.shape
    return replace(relaxation, lower_slope=full.view(shape[0], rows, *shape[1:]))


def _evaluate(
    problem: _Problem, starts: list[_Start], centre: Tensor, radius: Tensor
) -> tuple[list[Interval], Tensor]:
    """One pass: intermediate bounds with their slopes, then the spec rows ``[spec; -spec]``."""
    relu_bounds = list(problem.crown_relu)
    positions = problem.positions
    neurons = [_unstable_neurons(low, high) for low, high in problem.crown_relu]
    raw = None
    for start in starts:
        layers = len(relu_bounds) if start.layer is None else start.layer
        relaxations = []
        for j in range(layers):
            relaxation = ReLURelaxation.from_bounds(*relu_bounds[j])
            if j in start.alphas:
                low, high = relu_bounds[j]
                unstable = ((low < 0) & (high > 0)).detach()
                relaxation = _row_slopes(relaxation, start.alphas[j], neurons[j], unstable)
            relaxations.append(relaxation)
        prefix = problem.ops if start.layer is None else problem.ops[: positions[start.layer]]
        result = backward_lower_bound(prefix, start.A, relaxations, centre, radius)
        if start.layer is None:
            raw = result
            continue
        relu_bounds[start.layer] = _updated(problem, start, result)
    assert raw is not None
    return relu_bounds, raw


def _updated(problem: _Problem, start: _Start, result: Tensor) -> Interval:
    """Layer ``start.layer``'s bounds: CROWN's where stable, new ∩ IBP where CROWN's were
    unstable (so a sample's result does not depend on the other samples of the batch)."""
    k, neurons = start.layer, start.neurons
    count = neurons.numel()
    base_low, base_high = problem.crown_relu[k]
    ibp_low, ibp_high = problem.ibp_relu[k]
    low, high = base_low.flatten(1).clone(), base_high.flatten(1).clone()
    unstable = ((low < 0) & (high > 0))[:, neurons]
    new_low = torch.maximum(ibp_low.flatten(1)[:, neurons], result[:, :count])
    new_high = torch.minimum(ibp_high.flatten(1)[:, neurons], -result[:, count:])
    low[:, neurons] = torch.where(unstable, new_low, low[:, neurons])
    high[:, neurons] = torch.where(unstable, new_high, high[:, neurons])
    return low.view(base_low.shape), high.view(base_high.shape)
