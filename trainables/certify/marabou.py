"""Marabou (Katz et al. 2019; Wu et al. 2024): a second complete verifier for Linear/ReLU nets.

Independent of the MILP path on purpose, so that the two can check each other: the weights
are read from the Linear layers here (not through milp.py's dense conversion), and Marabou
derives its own bounds and search. ``maraboupy`` is optional and imported only when a
network is built for it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from torch import nn

from trainables.bounds.lirpa import BackendUnavailableError
from trainables.bounds.ops import UnsupportedLayerError, flatten_sequential
from trainables.models.layers import Normalize

INSTALL_HINT = "pip install maraboupy==2.0.0 (Linux x86-64 wheel for Python 3.11)"
SUPPORTED_LAYERS = ("Linear", "ReLU", "Flatten", "Normalize (before Flatten/Linear)", "Identity")

Outcome = Literal["sat", "unsat", "timeout", "unknown", "error"]

#: How far inside the violating region a SAT point is sought when the first one Marabou
#: returns lies on the decision boundary (see ``solve_margin``).
INSIDE_MARGIN = 1e-5


@dataclass(frozen=True)
class AffineLayer:
    """``z -> W z + b``, followed by a ReLU when ``relu``."""

    weight: np.ndarray
    bias: np.ndarray
    relu: bool


@dataclass(frozen=True)
class LinearReLUNetwork:
    """A chain of affine layers (with or without ReLU) on the flattened input, in float64."""

    layers: tuple[AffineLayer, ...]

    @classmethod
    def from_sequential(
        cls, model: nn.Sequential, input_shape: tuple[int, ...]
    ) -> LinearReLUNetwork:
        """Read Linear/ReLU layers, folding a leading Normalize into the first Linear.

        Raises ``BackendUnavailableError`` when maraboupy cannot be imported (checked here,
        so a missing backend fails before any work) and ``UnsupportedLayerError`` for
        other layers.
        """
        _marabou_core()
        size = math.prod(input_shape)
        scale, shift = np.ones(size), np.zeros(size)  # the input map of leading Normalizes
        flat = len(input_shape) == 1
        layers: list[AffineLayer] = []
        for index, layer in enumerate(flatten_sequential(model)):
            where = f"layer {index} ({type(layer).__name__})"
            if isinstance(layer, nn.Identity):
                continue
            if isinstance(layer, nn.Flatten):
                if layer.start_dim != 1 or layer.end_dim != -1:
                    raise UnsupportedLayerError(f"{where}: only Flatten(start_dim=1, end_dim=-1)")
                flat = True
            elif isinstance(layer, Normalize):
                if flat or layers or len(input_shape) != 3:
                    raise UnsupportedLayerError(
                        f"{where}: the Marabou backend folds Normalize only on a [C, H, W] "
                        "input, before any Flatten or Linear"
                    )
                per_pixel = size // layer.mean.numel()
                layer_scale = np.repeat(layer.scale.detach().double().cpu().numpy(), per_pixel)
                layer_shift = np.repeat(layer.shift.detach().double().cpu().numpy(), per_pixel)
                scale, shift = layer_scale * scale, layer_scale * shift + layer_shift
            elif isinstance(layer, nn.Linear):
                layers.append(_read_linear(layer, where, flat, layers, size, scale, shift))
            elif isinstance(layer, nn.ReLU):
                if not layers:
                    raise UnsupportedLayerError(f"{where}: a ReLU before the first Linear")
                layers[-1] = replace(layers[-1], relu=True)
            else:
                raise UnsupportedLayerError(
                    f"{where}: the Marabou backend supports only {', '.join(SUPPORTED_LAYERS)}; "
                    "use backend='milp' for other layers"
                )
        if not layers:
            raise UnsupportedLayerError("the Marabou backend needs at least one Linear layer")
        return cls(tuple(layers))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output for one flattened input (float64)."""
        z = np.asarray(x, dtype=np.float64)
        for layer in self.layers:
            z = layer.weight @ z + layer.bias
            if layer.relu:
                z = np.maximum(z, 0.0)
        return z

    def solve_margin(
        self, lower: np.ndarray, upper: np.ndarray, label: int, other: int, time_limit: float
    ) -> tuple[Outcome, np.ndarray | None]:
        """Is ``z_label - z_other <= 0`` reachable for ``lower <= x <= upper``?

        "unsat": the margin is positive on the whole box. "sat": with the input Marabou
        found (check it with a forward pass of the model). Marabou's SAT points usually lie
        on the boundary ``z_label = z_other``, where rounding can leave the margin positive:
        then the query is repeated for ``<= -INSIDE_MARGIN`` to get a point strictly inside,
        and the outcome is "unknown" when there is none (a tie within the tolerance).
        "timeout" and "error" otherwise. Each query's time limit is rounded up to whole
        seconds (Marabou's resolution).
        """
        deadline = time.perf_counter() + time_limit
        outcome, point = self._query(lower, upper, label, other, 0.0, time_limit)
        if outcome != "sat" or self._margin(point, label, other) <= 0:
            return outcome, point
        left = deadline - time.perf_counter()
        if left <= 0:
            return "timeout", None
        outcome, point = self._query(lower, upper, label, other, -INSIDE_MARGIN, left)
        return ("unknown", None) if outcome == "unsat" else (outcome, point)

    def _margin(self, point: np.ndarray, label: int, other: int) -> float:
        out = self.forward(point)
        return float(out[label] - out[other])

    def _query(
        self,
        lower: np.ndarray,
        upper: np.ndarray,
        label: int,
        other: int,
        threshold: float,
        time_limit: float,
    ) -> tuple[Outcome, np.ndarray | None]:
        """One Marabou query: ``z_label - z_other <= threshold`` over the box."""
        core = _marabou_core()
        query = core.InputQuery()
        sizes = [layer.weight.shape[0] * (2 if layer.relu else 1) for layer in self.layers]
        query.setNumberOfVariables(lower.size + sum(sizes))
        current = np.arange(lower.size)
        for variable, low, high in zip(current.tolist(), lower, upper, strict=True):
            query.setLowerBound(variable, float(low))
            query.setUpperBound(variable, float(high))
            query.markInputVariable(variable, variable)
        next_free = lower.size
        for layer in self.layers:
            pre = np.arange(next_free, next_free + layer.bias.size)
            next_free += pre.size
            for row, target in enumerate(pre.tolist()):
                terms = [*zip(layer.weight[row].tolist(), current.tolist(), strict=True)]
                _add_equation(query, core.Equation.EQ, [*terms, (-1.0, target)], -layer.bias[row])
            current = pre
            if layer.relu:
                post = np.arange(next_free, next_free + pre.size)
                next_free += post.size
                for source, target in zip(pre.tolist(), post.tolist(), strict=True):
                    core.addReluConstraint(query, source, target)
                current = post
        for position, variable in enumerate(current.tolist()):
            query.markOutputVariable(variable, position)
        spec = [(1.0, int(current[label])), (-1.0, int(current[other]))]
        _add_equation(query, core.Equation.LE, spec, threshold)
        options = core.Options()
        options._verbosity = 0
        options._timeoutInSeconds = max(1, math.ceil(time_limit))
        exit_code, values, _ = core.solve(query, options, "")
        if exit_code == "sat":
            return "sat", np.array([values[i] for i in range(lower.size)])
        if exit_code == "unsat":
            return "unsat", None
        return ("timeout" if exit_code == "TIMEOUT" else "error"), None


def _read_linear(
    layer: nn.Linear,
    where: str,
    flat: bool,
    layers: list[AffineLayer],
    input_size: int,
    scale: np.ndarray,
    shift: np.ndarray,
) -> AffineLayer:
    """The Linear layer as an AffineLayer; the first one absorbs the input's Normalize map."""
    weight = layer.weight.detach().double().cpu().numpy()
    bias = (
        np.zeros(weight.shape[0])
        if layer.bias is None
        else layer.bias.detach().double().cpu().numpy()
    )
    if not flat:
        raise UnsupportedLayerError(f"{where}: a Linear on a multi-dimensional input needs Flatten")
    expected = layers[-1].bias.size if layers else input_size
    if weight.shape[1] != expected:
        raise UnsupportedLayerError(f"{where}: expects {weight.shape[1]} inputs, gets {expected}")
    if not layers:
        weight, bias = weight * scale[None, :], bias + weight @ shift
    return AffineLayer(weight, bias, relu=False)


def _add_equation(query: Any, kind: Any, terms: list[tuple[float, int]], scalar: float) -> None:
    """Add ``sum(coefficient * variable) (kind) scalar`` to a Marabou query."""
    equation = _marabou_core().Equation(kind)
    for coefficient, variable in terms:
        if coefficient != 0.0:
            equation.addAddend(coefficient, variable)
    equation.setScalar(float(scalar))
    query.addEquation(equation)


def _marabou_core() -> Any:
    """``maraboupy.MarabouCore``, or a clear error that says how to install it."""
    try:
        from maraboupy import MarabouCore
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend='marabou' needs maraboupy, which cannot be imported ({error}); "
            f"install it with: {INSTALL_HINT}; or use backend='milp'"
        ) from error
    return MarabouCore


__all__ = ["INSIDE_MARGIN", "INSTALL_HINT", "SUPPORTED_LAYERS", "AffineLayer", "LinearReLUNetwork"]
