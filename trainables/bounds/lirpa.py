"""Optional delegation to a modern auto_LiRPA (>= 0.5), when the user has one installed.

The registry only offers auto_LiRPA 0.3, which does not import on torch 2.x, and newer
releases exist only as git sources; so certsweep's own bounds are the default and nothing
requires this backend. It exists so that users with a working auto_LiRPA can cross-check.

Both backends compute the same bounds (``linear.py``'s semantics): every ReLU pre-activation
bound of "crown" / "alpha-crown" is intersected with IBP's (passed to auto_LiRPA as
``reference_bounds``, which it intersects with what it computes), and every final
linear-relaxation bound with the IBP bound of the spec (and alpha-CROWN's with CROWN's).
"""

from __future__ import annotations

from importlib import metadata

import torch
from torch import Tensor, nn

from trainables.bounds.interval import interval_bounds_with_relu_inputs
from trainables.bounds.ops import linearize

MINIMUM_VERSION = (0, 5)
_METHOD_NAMES = {
    "ibp": "IBP",
    "crown-ibp": "CROWN-IBP",
    "crown": "CROWN",
    "alpha-crown": "CROWN-Optimized",
}


class BackendUnavailableError(ImportError):
    """The requested bound backend is not installed in a compatible version."""


def lirpa_version() -> tuple[int, ...] | None:
    """The installed auto_LiRPA version, or None when it is absent."""
    try:
        text = metadata.version("auto_LiRPA")
    except metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def lirpa_bounds(
    model: nn.Module,
    lower: Tensor,
    upper: Tensor,
    method: str,
    C: Tensor | None,
    alpha_iterations: int = 20,
    alpha_lr: float = 0.5,
) -> tuple[Tensor, Tensor]:  # pragma: no cover - needs auto_LiRPA >= 0.5
    """Bounds from auto_LiRPA's BoundedModule for the same box, method and spec."""
    version = lirpa_version()
    if version is None or version < MINIMUM_VERSION:
        found = "not installed" if version is None else ".".join(map(str, version))
        raise BackendUnavailableError(
            f"backend='auto_lirpa' needs auto_LiRPA >= 0.5 (found: {found}); use "
            "backend='native' (the default), or install auto_LiRPA from its git source"
        )
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm

    centre = (lower + upper) / 2
    ops, _ = linearize(model, centre)
    (ibp_low, ibp_high), relu_inputs = interval_bounds_with_relu_inputs(ops, lower, upper, C)
    if method == "ibp":
        return ibp_low, ibp_high
    options = {"optimize_bound_args": {"iteration": alpha_iterations, "lr_alpha": alpha_lr}}
    bounded = BoundedModule(model, centre, bound_opts=options, device=str(centre.device))
    perturbation = PerturbationLpNorm(norm=float("inf"), x_L=lower, x_U=upper)
    inputs = BoundedTensor(centre, perturbation)
    reference = {
        relu.inputs[0].name: (low.detach(), high.detach())
        for relu, (low, high) in zip(bounded.relus, relu_inputs, strict=True)
    }

    def run(name: str) -> tuple[Tensor, Tensor]:
        lb, ub = bounded.compute_bounds(
            x=(inputs,), C=C, method=name, reference_bounds=dict(reference)
        )
        return torch.as_tensor(lb), torch.as_tensor(ub)

    lb, ub = run(_METHOD_NAMES[method])
    if method == "alpha-crown":
        crown_lb, crown_ub = run("CROWN")
        lb, ub = torch.maximum(lb, crown_lb), torch.minimum(ub, crown_ub)
    return torch.maximum(lb, ibp_low), torch.minimum(ub, ibp_high)
