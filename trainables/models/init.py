"""Shi et al. (2021)'s IBP initialisation for certified training.

With standard (Kaiming) initialisation interval bounds grow exponentially with depth at the
start of training; drawing weights from N(0, sigma^2) with sigma = sqrt(2 pi) / fan_in keeps
the expected bound width constant from layer to layer (Shi et al., Theorem 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def ibp_init_std(fan_in: int) -> float:
    """sigma = sqrt(2 pi) / fan_in."""
    return math.sqrt(2 * math.pi) / fan_in


def shi_ibp_init(model: nn.Module) -> None:
    """Re-draw every Linear / Conv2d weight except the last layer's; biases are untouched."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        for layer in layers[:-1]:
            fan_in = layer.weight[0].numel()  # in_features, or in_channels/groups * kh * kw
            layer.weight.normal_(0.0, ibp_init_std(fan_in))
