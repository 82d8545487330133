"""Named access to intermediate activations, for distillation losses.

Features are taken by running the top-level children one by one (exactly what
``nn.Sequential.forward`` does), so a single pass yields both the logits and every requested
activation, all on the autograd graph. Hooks would work too, but would leave state on the
model if a loss raised mid-step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

PENULTIMATE = "penultimate"
LOGITS = "logits"
_FINAL_LINEAR = "fc_out"


def feature_names(model: nn.Sequential) -> list[str]:
    """Top-level child names in order, then the aliases ``penultimate`` and ``logits``.

    ``penultimate`` (the input of ``fc_out``) is only offered if the model has ``fc_out``.
    """
    names = [name for name, _ in model.named_children()]
    aliases = [PENULTIMATE, LOGITS] if _FINAL_LINEAR in names else [LOGITS]
    return names + aliases


def feature_prefix(model: nn.Sequential, name: str) -> list[nn.Module]:
    """The top-level children whose composition maps the input to feature ``name``.

    Bound propagation up to a feature (e.g. IBP feature bounds for distillation) runs
    through exactly these layers.
    """
    _check_names(model, [name])
    children = list(model.named_children())
    if name == LOGITS:
        return [child for _, child in children]
    names = [child_name for child_name, _ in children]
    end = names.index(_FINAL_LINEAR) if name == PENULTIMATE else names.index(name) + 1
    return [child for _, child in children[:end]]


def forward_features(
    model: nn.Sequential, x: torch.Tensor, names: Iterable[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` once on ``x``; return its logits and ``{name: activation}`` for ``names``."""
    if isinstance(names, str):
        raise TypeError(f"names must be an iterable of feature names, not the string {names!r}")
    wanted = set(names)
    _check_names(model, wanted)
    features: dict[str, torch.Tensor] = {}
    out = x
    for name, child in model.named_children():
        if name == _FINAL_LINEAR and PENULTIMATE in wanted:
            features[PENULTIMATE] = out
        out = child(out)
        if name in wanted:
            features[name] = out
    if LOGITS in wanted:
        features[LOGITS] = out
    return out, features


def _check_names(model: nn.Sequential, names: Iterable[str]) -> None:
    available = feature_names(model)
    unknown = sorted(set(names).difference(available))
    if unknown:
        raise ValueError(f"unknown feature name(s) {unknown}; available: {available}")
