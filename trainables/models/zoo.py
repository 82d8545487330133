"""Registry of architectures and the single entry point ``build_model``.

Every model is ``nn.Sequential(normalize, ...)`` with named children: the bound propagation
walks Sequentials, distillation taps children by name, and keeping normalisation inside the
model lets perturbation sets be defined on [0, 1] pixels.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from trainables.models import certified, lipschitz, resnets
from trainables.models.layers import Normalize
from trainables.models.options import check_int

if TYPE_CHECKING:  # the data package (torchvision, sklearn) is not needed to build a model
    from trainables.data import DatasetInfo

_BUILDERS: dict[str, Callable[..., OrderedDict[str, nn.Module]]] = {
    **certified.BUILDERS,
    **resnets.BUILDERS,
    **lipschitz.BUILDERS,
}

MODELS: tuple[str, ...] = tuple(_BUILDERS)
CERTIFIABLE_MODELS: tuple[str, ...] = tuple(certified.BUILDERS)
#: Certified by their Lipschitz constant (``trainables.certify.lipschitz``), not by bounds.
LIPSCHITZ_MODELS: tuple[str, ...] = tuple(lipschitz.BUILDERS)


def _options_of(builder: Callable[..., object]) -> list[str]:
    params = inspect.signature(builder).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def model_options(name: str) -> list[str]:
    """The options (``model.options``) model ``name`` accepts."""
    return _options_of(_BUILDERS[name])


def check_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **options: object
) -> None:
    """Raise the ``ValueError`` ``build_model`` would raise, without allocating weights.

    The model is built on PyTorch's meta device (shapes only, no memory, no random draws);
    a builder that computes on its weights there (deel-torchlip's spectral normalisation)
    is built on the CPU instead, with the random state restored afterwards.
    """
    try:
        with torch.device("meta"):
            build_model(name, input_shape, num_classes, **options)
    except ValueError:
        raise
    except (RuntimeError, NotImplementedError):
        with torch.random.fork_rng(devices=[]):
            build_model(name, input_shape, num_classes, **options)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    for axis, size in zip(("channels", "height", "width"), input_shape, strict=True):
        check_int(f"input_shape {axis}", size, 1)
    return tuple(input_shape)


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options: object,
) -> nn.Sequential:
    """Build model ``name`` for ``input_shape`` (C, H, W) pixels in [0, 1].

    ``mean``/``std`` default to the identity normalisation; ``options`` are the builder's
    own (e.g. ``width``). Any invalid argument raises ``ValueError`` naming the model.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    builder = _BUILDERS[name]
    known = _options_of(builder)
    unknown = sorted(set(options).difference(known))
    if unknown:
        raise ValueError(
            f"model {name!r}: unknown option(s) {unknown}; it takes: {', '.join(known)}"
        )
    try:
        shape = _check_input_shape(input_shape)
        check_int("num_classes", num_classes, 1)
        channels = shape[0]
        mean = [0.0] * channels if mean is None else list(mean)
        std = [1.0] * channels if std is None else list(std)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"mean/std need {channels} values (one per input channel), "
                f"got {len(mean)} and {len(std)}"
            )
        layers = OrderedDict(normalize=Normalize(mean, std))
        layers.update(builder(shape, num_classes, **options))
    except ValueError as err:
        raise ValueError(f"model {name!r}: {err}") from err
    return nn.Sequential(layers)


def build_model_for(info: DatasetInfo, name: str, options: Mapping[str, object]) -> nn.Sequential:
    """Model ``name`` (with its ``options``) for a dataset's input shape, classes and
    normalisation: what a training run, a teacher and a checkpoint's model are built with."""
    return build_model(
        name, info.input_shape, info.num_classes, mean=info.mean, std=info.std, **options
    )
