"""Optional delegation to a modern auto_LiRPA (>= 0.5), when the user has one installed.

The registry only offers auto_LiRPA 0.3, which does not import on torch 2.x, and newer
releases exist only as git sources; so certsweep's own bounds are the default and nothing
requires this backend. It exists so that users with a working auto_LiRPA can cross-check.
"""

from __future__ import annotations

from importlib import metadata

from torch import Tensor, nn

MINIMUM_VERSION = (0, 5)
_METHOD_NAMES = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN"}


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
    model: nn.Module, lower: Tensor, upper: Tensor, method: str, C: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Bounds from auto_LiRPA's BoundedModule for the same box, method and spec."""
    version = lirpa_version()
    if version is None or version < MINIMUM_VERSION:
        found = "not installed" if version is None else ".".join(map(str, version))
        raise BackendUnavailableError(
            f"backend='auto_lirpa' needs auto_LiRPA >= 0.5 (found: {found}); use "
            "backend='native' (the default), or install auto_LiRPA from its git source"
        )
    import torch
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm

    centre = (lower + upper) / 2
    bounded = BoundedModule(model, centre, device=str(centre.device))
    perturbation = PerturbationLpNorm(norm=float("inf"), x_L=lower, x_U=upper)
    inputs = BoundedTensor(centre, perturbation)
    lb, ub = bounded.compute_bounds(x=(inputs,), C=C, method=_METHOD_NAMES[method])
    return torch.as_tensor(lb), torch.as_tensor(ub)
