"""Complete verification of small ReLU networks: one verdict per sample, with counterexamples.

Bounds (IBP, CROWN) can only say "certified" or "don't know"; a complete verifier also
proves the opposite, with a concrete misclassified point of the box. Exponential in the
number of unstable ReLUs, so meant for small networks, with a time limit per sample.

Per sample (box ``B(x, eps)`` clipped to [0, 1]; each margin ``z_y - z_j`` is one row):

1. Fast path (optional): CROWN lower bounds of all margins positive -> "verified"; the
   clean point or a margin-PGD point with ``z_y <= max_j z_j`` -> "falsified".
2. Complete search, row by row: the MILP of ``milp.py`` (big-M; its interval constants
   intersected with CROWN's pre-activation bounds, which fixes more ReLUs and shrinks M),
   or Marabou (``marabou.py``). A point the solver returns (minimiser, incumbent, SAT
   assignment) counts as a counterexample only after a forward pass of the model itself
   misclassifies it (ties count as misclassified).

Verdicts:

* "verified": every row has a proven positive minimum over the box (CROWN bound > 0,
  MILP lower bound > ``PROOF_MARGIN``, or Marabou UNSAT of ``z_y - z_j <= 0``). Exact for the
  float64 network; a float32 model's own rounding (~1e-6 relative) is not modelled.
* "falsified": ``x_adv`` lies in the box (in the model's dtype) and the model's forward pass
  gives ``z_y <= max_{j != y} z_j``.
* "timeout": the time limit ran out before either.
* "unknown": the solver finished without a proof and without a confirmed counterexample:
  the minimum margin lies within the solver's tolerance of 0 (or the solver failed).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from trainables.attacks.classification import linf_box, pgd_attack, true_class_margin
from trainables.bounds import compute_bounds, margin_spec
from trainables.bounds.linear import crown_relu_bounds
from trainables.bounds.ops import Op, linearize
from trainables.certify.marabou import LinearReLUNetwork
from trainables.certify.milp import INTERVAL_SLACK, DenseReLUNetwork, minimize_linear
from trainables.models.modes import eval_mode

Status = Literal["verified", "falsified", "timeout", "unknown"]
Backend = Literal["milp", "marabou"]
ReluBounds = Literal["crown", "interval"]
BACKENDS: tuple[str, ...] = ("milp", "marabou")
RELU_BOUNDS: tuple[str, ...] = ("crown", "interval")

#: A MILP lower bound must exceed this to prove a margin positive: it covers HiGHS's absolute
#: gap (1e-6) and its feasibility tolerance (1e-7) scaled by the big-M constants.
PROOF_MARGIN = 1e-5


@dataclass(frozen=True)
class Verdict:
    """The answer for one sample (see the module docstring for the semantics).

    ``seconds``: time spent on this sample (its share of the batched fast path included).
    ``decided_by``: "crown", "attack", "milp" or "marabou".
    ``x_adv``: the counterexample (one input, the model's dtype and device), only when
    ``status == "falsified"``.
    """

    status: Status
    seconds: float
    decided_by: str
    x_adv: Tensor | None = None


@dataclass(frozen=True)
class _RowResult:
    """A complete solver's answer for one margin row, before the forward-pass check."""

    proved: bool  # the row's margin is proven positive over the box
    x: np.ndarray | None  # a candidate counterexample (minimiser, incumbent, SAT point)
    timed_out: bool


#: Solves one row: ``(sample index, other class, seconds left) -> _RowResult``.
_RowSolver = Callable[[int, int, float], _RowResult]


def verify_exact(
    model: nn.Sequential,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    time_limit: float = 60.0,
    backend: Backend = "milp",
    fast_path: bool = True,
    relu_bounds: ReluBounds = "crown",
    pgd_steps: int = 50,
    pgd_restarts: int = 4,
    seed: int = 0,
) -> list[Verdict]:
    """Complete L-inf robustness verification of each sample of ``x`` (see module docstring).

    Args:
        model: an ``nn.Sequential`` of the layers ``trainables.bounds`` supports (the Marabou
            backend: Linear, ReLU, Flatten, Normalize, Identity); evaluated in eval mode.
        x, y: inputs ``[batch, *input_shape]`` in [0, 1] and integer labels ``[batch]``.
        eps: L-inf radius (>= 0); the box is clipped to [0, 1].
        time_limit: seconds of complete search per sample (> 0); Marabou rounds each query's
            limit up to whole seconds.
        backend: "milp" (scipy HiGHS) or "marabou" (needs ``maraboupy``).
        fast_path: decide by CROWN and PGD first, and skip rows CROWN already proves.
        relu_bounds: MILP big-M constants from "crown" (tighter) or "interval" (milp.py's own,
            independent of the bound code).
        pgd_steps, pgd_restarts, seed: the fast path's margin-PGD attack.
    """
    eps, time_limit = _check_arguments(
        x, y, eps, time_limit, backend, relu_bounds, pgd_steps, pgd_restarts
    )
    if x.shape[0] == 0:
        return []
    with eval_mode(model):
        model64 = copy.deepcopy(model).double().cpu()
        lower, upper = linf_box(x.detach(), eps)
        low64, up64 = lower.double().cpu(), upper.double().cpu()
        # Also rejects layers milp.py would silently treat as affine (e.g. Tanh).
        ops, output = linearize(model64, low64[:1])
        classes = output.shape[-1]
        if y.min() < 0 or y.max() >= classes:
            raise ValueError(f"labels must lie in [0, {classes - 1}], got {y.tolist()}")
        problem = VerificationProblem(model, model64, x, y, eps, lower, upper, low64, up64, classes)
        marabou_net = (
            LinearReLUNetwork.from_sequential(model64, tuple(x.shape[1:]))
            if backend == "marabou"
            else None
        )
        seconds = np.zeros(x.shape[0])
        verdicts: list[Verdict | None] = [None] * x.shape[0]
        crown_lb = None
        if fast_path:
            crown_lb = _fast_path(problem, pgd_steps, pgd_restarts, seed, verdicts, seconds)
        pending = [i for i, verdict in enumerate(verdicts) if verdict is None]
        if not pending:
            return verdicts
        if marabou_net is not None:
            solve = _marabou_solver(problem, marabou_net)
        else:
            solve = _milp_solver(problem, ops, relu_bounds, pending)
        with torch.no_grad():
            clean_logits = model(x)
        for i in pending:
            rows = [j for j in range(classes) if j != int(y[i])]
            if crown_lb is not None:
                rows = [j for j in rows if crown_lb[i, j] <= 0]
            gaps = clean_logits[i, y[i]] - clean_logits[i]
            rows.sort(key=lambda j, g=gaps: float(g[j]))  # likeliest violation first
            spent = float(seconds[i])
            verdicts[i] = _search_sample(problem, solve, i, rows, time_limit, spent, backend)
    return verdicts


@dataclass(frozen=True)
class VerificationProblem:
    """One batch: the box in the model's dtype and device, and float64 CPU copies (the
    complete verifiers' shared view of it, here and in ``certify.bab``)."""

    model: nn.Sequential
    model64: nn.Sequential
    x: Tensor
    y: Tensor
    eps: float
    lower: Tensor
    upper: Tensor
    low64: Tensor
    up64: Tensor
    classes: int

    def counterexample(self, index: int, points: Tensor) -> Tensor | None:
        """The first of ``points`` (``[n, *shape]``) that, cast to the model's dtype and
        clamped into the box, the float64 network misclassifies; else None."""
        lower, upper = self.lower[index], self.upper[index]
        candidates = torch.max(torch.min(points.to(lower), upper), lower)
        with torch.no_grad():
            logits = self.model64(candidates.double().cpu())
        labels = self.y[index].expand(len(points))
        wrong = (true_class_margin(logits, labels) <= 0).nonzero().flatten()
        return candidates[int(wrong[0])].detach() if wrong.numel() else None


def _fast_path(
    problem: VerificationProblem,
    pgd_steps: int,
    pgd_restarts: int,
    seed: int,
    verdicts: list[Verdict | None],
    seconds: np.ndarray,
) -> np.ndarray:
    """CROWN-verify and attack in batches; fills ``verdicts`` and ``seconds`` in place.

    Returns the CROWN lower bound of ``z_y - z_j`` as ``[batch, classes]`` (+inf at ``y``),
    so that the complete search can skip the rows it proves.
    """
    model, x, y, classes = problem.model, problem.x, problem.y, problem.classes
    start = time.perf_counter()
    with torch.no_grad():
        C = margin_spec(y.cpu(), classes, dtype=torch.float64)
        lb, _ = compute_bounds(problem.model64, problem.low64, problem.up64, "crown", C)
    others = torch.arange(classes).expand(len(y), -1) != y.cpu()[:, None]
    row_lb = torch.full((len(y), classes), math.inf, dtype=torch.float64)
    row_lb[others] = lb.flatten()
    seconds += (time.perf_counter() - start) / len(y)
    for i in np.flatnonzero((lb > 0).all(dim=1).numpy()):
        verdicts[i] = Verdict("verified", float(seconds[i]), "crown")
    open_ = [i for i, verdict in enumerate(verdicts) if verdict is None]
    if not open_:
        return row_lb.numpy()
    start = time.perf_counter()
    xs, ys = x[open_], y[open_]
    generator = torch.Generator().manual_seed(seed)
    attacked = pgd_attack(
        model,
        xs,
        ys,
        problem.eps,
        steps=pgd_steps,
        restarts=pgd_restarts,
        loss="margin",
        generator=generator,
    )
    with torch.no_grad():
        clean_margin = true_class_margin(model(xs), ys)
        attacked_margin = true_class_margin(model(attacked), ys)
    use_clean = (clean_margin <= attacked_margin).view(-1, *[1] * (x.dim() - 1))
    best = torch.where(use_clean, xs, attacked)
    found = torch.minimum(clean_margin, attacked_margin) <= 0
    elapsed = time.perf_counter() - start
    for k, i in enumerate(open_):
        seconds[i] += elapsed / len(open_)
        if found[k]:
            verdicts[i] = Verdict("falsified", float(seconds[i]), "attack", best[k].detach())
    return row_lb.numpy()


def _search_sample(
    problem: VerificationProblem,
    solve: _RowSolver,
    index: int,
    rows: list[int],
    time_limit: float,
    spent: float,
    backend: str,
) -> Verdict:
    """Complete search over the margin rows of one sample within its time limit."""
    start = time.perf_counter()
    deadline = start + time_limit
    status: Status = "verified"
    x_adv = None
    for other in rows:
        left = deadline - time.perf_counter()
        if left <= 0:
            status = "timeout"
            break
        result = solve(index, other, left)
        if result.x is not None:
            x_adv = _confirmed_counterexample(problem, index, result.x)
            if x_adv is not None:
                status = "falsified"
                break
        if not result.proved:
            status = "timeout" if result.timed_out else "unknown"
            break
    return Verdict(status, spent + time.perf_counter() - start, backend, x_adv)


def _confirmed_counterexample(
    problem: VerificationProblem, index: int, point: np.ndarray
) -> Tensor | None:
    """``point`` in the model's dtype, clamped into the box, if the model misclassifies it.

    Clamping matters: solvers meet the input bounds only up to their tolerances.
    """
    lower, upper = problem.lower[index], problem.upper[index]
    candidate = torch.from_numpy(np.asarray(point)).to(lower).reshape(lower.shape)
    candidate = torch.min(torch.max(candidate, lower), upper)
    with torch.no_grad():
        logits = problem.model(candidate[None])
    margin = true_class_margin(logits, problem.y[index].reshape(1))
    return candidate if bool(margin[0] <= 0) else None


def _milp_solver(
    problem: VerificationProblem, ops: list[Op], relu_bounds: str, pending: list[int]
) -> _RowSolver:
    """Row solver on milp.py's encoding, per sample with CROWN-tightened big-M constants."""
    low64, up64 = problem.low64, problem.up64
    dense = DenseReLUNetwork.from_sequential(problem.model64, tuple(low64.shape[1:]))
    networks: dict[int, DenseReLUNetwork] = dict.fromkeys(pending, dense)
    if relu_bounds == "crown":
        with torch.no_grad():
            bounds = crown_relu_bounds(ops, low64[pending], up64[pending])
        for k, i in enumerate(pending):
            known = tuple(_widened(low[k], high[k]) for low, high in bounds)
            networks[i] = _BoundedNetwork(dense.weights, dense.biases, dense.input_shape, known)
    lows, highs = low64.numpy(), up64.numpy()

    def solve(index: int, other: int, seconds: float) -> _RowResult:
        objective = np.zeros(problem.classes)
        objective[int(problem.y[index])], objective[other] = 1.0, -1.0
        result = minimize_linear(
            networks[index], lows[index], highs[index], objective, time_limit=seconds
        )
        proved = result.value > PROOF_MARGIN  # the minimum, or a proven bound of it
        return _RowResult(proved, result.x, result.status == "time_limit" and not proved)

    return solve


def _widened(low: Tensor, high: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float64 bounds widened like milp.py's own intervals (against rounding)."""
    low, high = low.flatten().numpy(), high.flatten().numpy()
    slack = INTERVAL_SLACK * (1.0 + np.maximum(np.abs(low), np.abs(high)))
    return low - slack, high + slack


@dataclass(frozen=True)
class _BoundedNetwork(DenseReLUNetwork):
    """The dense network plus pre-activation bounds proven (by CROWN) for one input box.

    ``minimize_linear`` takes its big-M constants from ``pre_activation_bounds``; intersecting
    milp.py's own intervals with these tightens the encoding without touching milp.py, which
    must stay independent of the bound code. Valid only for the box the bounds were made for.
    """

    known: tuple[tuple[np.ndarray, np.ndarray], ...]

    def pre_activation_bounds(
        self, lower: np.ndarray, upper: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        own = super().pre_activation_bounds(lower, upper)
        return [
            (np.maximum(low, known_low), np.minimum(high, known_high))
            for (low, high), (known_low, known_high) in zip(own, self.known, strict=True)
        ]


def _marabou_solver(problem: VerificationProblem, network: LinearReLUNetwork) -> _RowSolver:
    lows, highs = problem.low64.flatten(1).numpy(), problem.up64.flatten(1).numpy()

    def solve(index: int, other: int, seconds: float) -> _RowResult:
        label = int(problem.y[index])
        outcome, point = network.solve_margin(lows[index], highs[index], label, other, seconds)
        return _RowResult(outcome == "unsat", point, outcome == "timeout")

    return solve


def _check_arguments(
    x: Tensor,
    y: Tensor,
    eps: float,
    time_limit: float,
    backend: str,
    relu_bounds: str,
    pgd_steps: int,
    pgd_restarts: int,
) -> tuple[float, float]:
    """Clear errors for bad arguments; returns ``eps`` and ``time_limit`` as floats."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if relu_bounds not in RELU_BOUNDS:
        raise ValueError(
            f"unknown relu_bounds {relu_bounds!r}; choose one of {', '.join(RELU_BOUNDS)}"
        )
    if pgd_steps < 0 or pgd_restarts < 1:
        raise ValueError(
            f"need pgd_steps >= 0 and pgd_restarts >= 1, got {pgd_steps}, {pgd_restarts}"
        )
    return check_problem(x, y, eps, time_limit)


def check_problem(x: Tensor, y: Tensor, eps: float, time_limit: float) -> tuple[float, float]:
    """The checks every complete verifier makes of its problem (here and ``certify.bab``):
    a batch of inputs, integer labels, ``eps >= 0`` and a time limit > 0, both finite;
    returns ``eps`` and ``time_limit`` as floats."""
    try:
        eps, time_limit = float(eps), float(time_limit)
    except (TypeError, ValueError) as error:
        message = f"eps and time_limit must be numbers, got {eps!r} and {time_limit!r}"
        raise TypeError(message) from error
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit must be a finite number of seconds > 0, got {time_limit}")
    if x.dim() < 2:
        raise ValueError(f"x needs a batch dimension, got shape {tuple(x.shape)}")
    if y.shape != x.shape[:1] or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(
            f"y must hold integer labels of shape [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}"
        )
    return eps, time_limit


__all__ = ["BACKENDS", "PROOF_MARGIN", "RELU_BOUNDS", "Verdict", "verify_exact"]
