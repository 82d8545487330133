"""Teacher networks for distillation: pre-activation ResNet-18 and Wide ResNets.

They are never certified, so residual blocks are allowed, but the top level keeps the zoo's
naming (``stem, layer1.., bn, relu, pool, flatten, fc_out``) so distillation can tap the
same feature names as on the certifiable students. Adaptive pooling lets them run on any
input size, down to 8x8 digits.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from trainables.models.options import check_int


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016), also the block of Wide ResNets.

    The projection shortcut (1x1 conv, when shape changes) reads the pre-activated input,
    the identity shortcut the raw input, as in both reference implementations.
    """

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        needs_projection = stride != 1 or in_channels != channels
        self.shortcut = (
            nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)
            if needs_projection
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return out + shortcut


def _resnet(
    in_channels: int, stem_channels: int, stages: list[tuple[int, int, int]], num_classes: int
) -> OrderedDict[str, nn.Module]:
    """Stem conv, one ``layerN`` per ``(channels, blocks, stride)`` stage, then BN-ReLU head."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Conv2d(in_channels, stem_channels, 3, stride=1, padding=1, bias=False)
    )
    channels = stem_channels
    for i, (out_channels, blocks, stride) in enumerate(stages, start=1):
        stage = []
        for block_stride in [stride] + [1] * (blocks - 1):
            stage.append(PreActBlock(channels, out_channels, block_stride))
            channels = out_channels
        layers[f"layer{i}"] = nn.Sequential(*stage)
    layers["bn"] = nn.BatchNorm2d(channels)
    layers["relu"] = nn.ReLU()
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc_out"] = nn.Linear(channels, num_classes)
    return layers


def preact_resnet18(
    input_shape: tuple[int, int, int], num_classes: int, *, width: int = 64
) -> OrderedDict[str, nn.Module]:
    """CIFAR-style PreAct ResNet-18: 3x3 stem, no max-pool, ``width``..``8*width`` channels."""
    check_int("width", width, 1)
    stages = [(width * 2**i, 2, 1 if i == 0 else 2) for i in range(4)]
    return _resnet(input_shape[0], width, stages, num_classes)


def wide_resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    depth: int = 28,
    widen_factor: int = 10,
) -> OrderedDict[str, nn.Module]:
    """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis), without dropout."""
    check_int("depth", depth, 10)
    check_int("widen_factor", widen_factor, 1)
    if (depth - 4) % 6:
        raise ValueError(f"option 'depth' must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
    blocks = (depth - 4) // 6
    stages = [(16 * widen_factor * 2**i, blocks, 1 if i == 0 else 2) for i in range(3)]
    return _resnet(input_shape[0], 16, stages, num_classes)


BUILDERS = {"preact_resnet18": preact_resnet18, "wide_resnet": wide_resnet}
