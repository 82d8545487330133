"""1-Lipschitz networks from deel-torchlip (Serrurier et al. 2021), certified by their margin.

Each layer is 1-Lipschitz in L2 by construction: ``SpectralLinear`` keeps the largest
singular value of its weight at 1 (power iteration) and, with ``bjorck=True``, pushes every
singular value to 1 (Bjorck orthonormalisation: gradient-norm preserving, trains better but
costs iterations per step); ``GroupSort2`` sorts pairs of units, a 1-Lipschitz activation that
keeps the norm. The certificate is computed elsewhere (``trainables.certify.lipschitz``) from
the exported weights, never from the library's nominal constant: the parametrisations are
approximate (singular values of 1 + 1e-6 are common).

deel-torchlip is an optional dependency (``pip install certsweep[lipschitz]``): it is imported
when such a model is built, with a clear error if it is missing.
"""

from __future__ import annotations

from collections import OrderedDict
from types import ModuleType

from torch import nn

from trainables.models.options import check_int

Shape = tuple[int, int, int]


def _torchlip() -> ModuleType:
    try:
        import deel.torchlip as torchlip
    except ImportError as err:
        raise ValueError(
            "Lipschitz models need deel-torchlip: pip install 'certsweep[lipschitz]'"
            f" (import failed: {err})"
        ) from None
    return torchlip


def lip_mlp(
    input_shape: Shape, num_classes: int, *, depth: int = 2, width: int = 128, bjorck: bool = True
) -> OrderedDict[str, nn.Module]:
    """Fully connected 1-Lipschitz network: SpectralLinear + GroupSort2 blocks."""
    check_int("depth", depth, 0)
    check_int("width", width, 2)
    if width % 2:
        raise ValueError(f"option 'width' must be even (GroupSort2 sorts pairs), got {width}")
    if not isinstance(bjorck, bool):
        raise ValueError(f"option 'bjorck' must be true or false, got {bjorck!r}")
    torchlip = _torchlip()
    options = {} if bjorck else {"eps_bjorck": None}
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    features = input_shape[0] * input_shape[1] * input_shape[2]
    for i in range(1, depth + 1):
        layers[f"fc{i}"] = torchlip.SpectralLinear(features, width, **options)
        layers[f"sort{i}"] = torchlip.GroupSort2()
        features = width
    layers["fc_out"] = torchlip.SpectralLinear(features, num_classes, **options)
    return layers


BUILDERS = {"lip_mlp": lip_mlp}
