"""Exact minimum of a linear function of a small ReLU network's output over an input box.

Mixed-integer encoding of each unstable ReLU with big-M constants (Tjeng et al. 2019),
solved by ``scipy.optimize.milp`` (HiGHS). The network is first turned into dense float64
matrices by evaluating each run of affine layers on the unit basis, and the big-M constants
come from float64 interval arithmetic done here: nothing is taken from ``trainables.bounds``,
so the MILP is an independent reference for testing those bounds.

Exponential in the number of unstable ReLUs: for small networks (tests, verification of
small certified models with a time limit).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from trainables.bounds.ops import UnsupportedLayerError, flatten_sequential
from trainables.models.layers import Normalize

#: Layers the dense encoding treats as affine maps (everything else but ReLU is refused).
AFFINE_LAYERS = (
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.Flatten,
    nn.Identity,
    Normalize,
)

#: Relative widening of the float64 pre-activation intervals, against rounding.
INTERVAL_SLACK = 1e-9


@dataclass(frozen=True)
class DenseReLUNetwork:
    """``f(x) = W_L relu(... relu(W_1 x + b_1) ...) + b_L`` on the flattened input."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    input_shape: tuple[int, ...]

    @classmethod
    def from_sequential(
        cls, model: nn.Sequential, input_shape: tuple[int, ...]
    ) -> DenseReLUNetwork:
        """Dense form of an eval-mode Sequential (BatchNorm must use running statistics)."""
        if model.training:
            raise ValueError("DenseReLUNetwork needs the model in eval mode (call model.eval())")
        blocks: list[list[nn.Module]] = [[]]
        for layer in flatten_sequential(model):
            if isinstance(layer, nn.ReLU):
                blocks.append([])
            elif isinstance(layer, AFFINE_LAYERS):
                blocks[-1].append(copy.deepcopy(layer).double())
            else:
                raise UnsupportedLayerError(
                    f"the MILP encoding supports ReLU and affine layers, got {type(layer).__name__}"
                )
        weights, biases = [], []
        shape = tuple(input_shape)
        for block in blocks:
            weight, bias, shape = _dense_block(block, shape)
            weights.append(weight)
            biases.append(bias)
        return cls(tuple(weights), tuple(biases), tuple(input_shape))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output for one flattened input (float64)."""
        z = np.asarray(x, dtype=np.float64).ravel()
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = weight @ z + bias
            if index < len(self.weights) - 1:
                z = np.maximum(z, 0.0)
        return z

    def pre_activation_bounds(
        self, lower: np.ndarray, upper: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Interval bounds of every hidden layer's pre-activation (slightly widened)."""
        low, high = lower.ravel().astype(np.float64), upper.ravel().astype(np.float64)
        bounds = []
        for weight, bias in zip(self.weights[:-1], self.biases[:-1], strict=True):
            positive, negative = np.clip(weight, 0, None), np.clip(weight, None, 0)
            new_low = positive @ low + negative @ high + bias
            new_high = positive @ high + negative @ low + bias
            slack = INTERVAL_SLACK * (1.0 + np.maximum(np.abs(new_low), np.abs(new_high)))
            bounds.append((new_low - slack, new_high + slack))
            low, high = np.maximum(new_low, 0.0), np.maximum(new_high, 0.0)
        return bounds


def _dense_block(
    block: list[nn.Module], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Matrix and offset of an affine run of layers, read off its outputs on the unit basis."""
    size = int(np.prod(shape))
    basis = torch.cat([torch.zeros(1, size), torch.eye(size)]).double().reshape(-1, *shape)
    with torch.no_grad():
        out = basis
        for layer in block:
            out = layer(out)
    flat = out.reshape(size + 1, -1).numpy()
    bias = flat[0]
    return (flat[1:] - bias).T.copy(), bias.copy(), tuple(out.shape[1:])


@dataclass(frozen=True)
class MilpResult:
    """``value``: the minimum (status "optimal") or a proven lower bound of it (otherwise)."""

    value: float
    x: np.ndarray | None
    status: str


def minimize_linear(
    network: DenseReLUNetwork,
    lower: np.ndarray,
    upper: np.ndarray,
    objective: np.ndarray,
    time_limit: float | None = None,
) -> MilpResult:
    """Minimise ``objective . f(x)`` over ``lower <= x <= upper`` exactly."""
    lower = np.asarray(lower, dtype=np.float64).ravel()
    upper = np.asarray(upper, dtype=np.float64).ravel()
    encoding = _Encoding()
    inputs = encoding.add_variables(lower, upper)
    current = inputs
    pre_bounds = network.pre_activation_bounds(lower, upper)
    hidden = zip(network.weights[:-1], network.biases[:-1], pre_bounds, strict=True)
    for weight, bias, (low, high) in hidden:
        current = encoding.add_relu_layer(current, weight, bias, low, high)
    cost = np.zeros(encoding.size)
    cost[current] = objective @ network.weights[-1]
    constant = float(objective @ network.biases[-1])
    options = {"mip_rel_gap": 0.0}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    result = milp(
        cost,
        integrality=encoding.integrality(),
        bounds=Bounds(encoding.lower(), encoding.upper()),
        constraints=encoding.constraints(),
        options=options,
    )
    # HiGHS meets bounds up to its feasibility tolerance (~1e-7): clip into the box so a
    # minimiser is always a valid point of the perturbation set.
    x = None if result.x is None else np.clip(result.x[inputs], lower, upper)
    x = None if x is None else x.reshape(network.input_shape)
    if result.status == 0:
        return MilpResult(float(result.fun) + constant, x, "optimal")
    bound = getattr(result, "mip_dual_bound", None)
    value = float(bound) + constant if bound is not None and np.isfinite(bound) else -np.inf
    status = "time_limit" if result.status == 1 else f"failed: {result.message}"
    return MilpResult(value, x, status)


class _Encoding:
    """Accumulates variables (with bounds and integrality) and sparse linear constraints."""

    def __init__(self) -> None:
        self._lower: list[np.ndarray] = []
        self._upper: list[np.ndarray] = []
        self._integer: list[np.ndarray] = []
        self._rows: list[tuple[dict[int, float], float, float]] = []
        self.size = 0

    def add_variables(self, low: np.ndarray, high: np.ndarray, integer: bool = False) -> np.ndarray:
        index = np.arange(self.size, self.size + low.size)
        self._lower.append(low)
        self._upper.append(high)
        self._integer.append(np.full(low.size, int(integer)))
        self.size += low.size
        return index

    def add_relu_layer(
        self,
        inputs: np.ndarray,
        weight: np.ndarray,
        bias: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
    ) -> np.ndarray:
        """Variables ``a = relu(W z + b)`` with ``z`` the ``inputs`` variables."""
        active, inactive = low >= 0, high <= 0
        unstable = ~(active | inactive)
        outputs = self.add_variables(
            np.zeros_like(low), np.where(inactive, 0.0, np.maximum(high, 0))
        )
        gates = self.add_variables(np.zeros(unstable.sum()), np.ones(unstable.sum()), integer=True)
        gate_of = np.full(low.size, -1)
        gate_of[unstable] = gates
        for neuron in np.flatnonzero(~inactive):
            # a - W z  (== b when active, >= b when unstable)
            self._add_row(
                {outputs[neuron]: 1.0, **_terms(inputs, -weight[neuron])},
                bias[neuron],
                bias[neuron] if active[neuron] else np.inf,
            )
            if unstable[neuron]:
                gate, lo, hi = gate_of[neuron], low[neuron], high[neuron]
                # a <= W z + b - lo (1 - d)   and   a <= hi d
                self._add_row(
                    {outputs[neuron]: 1.0, gate: -lo, **_terms(inputs, -weight[neuron])},
                    -np.inf,
                    bias[neuron] - lo,
                )
                self._add_row({outputs[neuron]: 1.0, gate: -hi}, -np.inf, 0.0)
        return outputs

    def _add_row(self, terms: dict[int, float], low: float, high: float) -> None:
        self._rows.append((terms, low, high))

    def integrality(self) -> np.ndarray:
        return np.concatenate(self._integer)

    def lower(self) -> np.ndarray:
        return np.concatenate(self._lower)

    def upper(self) -> np.ndarray:
        return np.concatenate(self._upper)

    def constraints(self) -> list[LinearConstraint]:
        if not self._rows:
            return []
        rows, cols, vals = [], [], []
        for row, (terms, _, _) in enumerate(self._rows):
            for col, val in terms.items():
                rows.append(row)
                cols.append(col)
                vals.append(val)
        matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(len(self._rows), self.size))
        low = np.array([r[1] for r in self._rows])
        high = np.array([r[2] for r in self._rows])
        return [LinearConstraint(matrix, low, high)]


def _terms(variables: np.ndarray, coefficients: np.ndarray) -> dict[int, float]:
    nonzero = np.flatnonzero(coefficients)
    return dict(zip(variables[nonzero].tolist(), coefficients[nonzero].tolist(), strict=True))


def exact_spec_minima(
    model: nn.Sequential,
    x_lower: torch.Tensor,
    x_upper: torch.Tensor,
    C: torch.Tensor,
    time_limit: float | None = None,
) -> tuple[np.ndarray, list[list[MilpResult]]]:
    """Exact ``min C f(x)`` per sample and spec row: ``[batch, specs]`` and the raw results."""
    network = DenseReLUNetwork.from_sequential(model, tuple(x_lower.shape[1:]))
    lows, highs = x_lower.double().cpu().numpy(), x_upper.double().cpu().numpy()
    specs = C.double().cpu().numpy()
    results = [
        [minimize_linear(network, lo, hi, row, time_limit) for row in spec]
        for lo, hi, spec in zip(lows, highs, specs, strict=True)
    ]
    values = np.array([[r.value for r in sample] for sample in results])
    return values, results
