"""Architectures for certified training: plain stacks of layers the bound propagation supports.

Each builder returns the layers after ``normalize`` as named children; ``build_model`` adds
the normalisation and wraps them in an ``nn.Sequential``. Layer sizes are computed from the
input shape here, so an input too small for the strides fails at build time with a clear
message rather than deep inside a forward pass.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from trainables.models.options import check_int

Shape = tuple[int, int, int]


def _conv(
    name: str, in_shape: Shape, out_channels: int, kernel: int, stride: int, padding: int
) -> tuple[nn.Conv2d, Shape]:
    """A ``Conv2d`` plus its output shape; raises if the input is too small for it."""
    channels, height, width = in_shape
    out_h, out_w = ((size + 2 * padding - kernel) // stride + 1 for size in (height, width))
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"input spatial size is too small: {name} (kernel {kernel}, stride {stride}, "
            f"padding {padding}) maps {height}x{width} to {out_h}x{out_w}"
        )
    conv = nn.Conv2d(channels, out_channels, kernel, stride=stride, padding=padding)
    return conv, (out_channels, out_h, out_w)


def _numel(shape: Shape) -> int:
    channels, height, width = shape
    return channels * height * width


def mlp(
    input_shape: Shape, num_classes: int, *, depth: int = 2, width: int = 256
) -> OrderedDict[str, nn.Module]:
    """Fully connected ReLU network; ``depth=0`` gives a linear classifier."""
    check_int("depth", depth, 0)
    check_int("width", width, 1)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    features = _numel(input_shape)
    for i in range(1, depth + 1):
        layers[f"fc{i}"] = nn.Linear(features, width)
        layers[f"relu{i}"] = nn.ReLU()
        features = width
    layers["fc_out"] = nn.Linear(features, num_classes)
    return layers


def cnn_small(
    input_shape: Shape, num_classes: int, *, width: int = 1, linear_size: int = 100
) -> OrderedDict[str, nn.Module]:
    """The two-conv "CNN-small" of Gowal et al. / CROWN-IBP; ``width`` multiplies channels."""
    check_int("width", width, 1)
    check_int("linear_size", linear_size, 1)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    shape = input_shape
    for i, channels in enumerate((16 * width, 32 * width), start=1):
        layers[f"conv{i}"], shape = _conv(f"conv{i}", shape, channels, 4, 2, 1)
        layers[f"relu{i}"] = nn.ReLU()
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(_numel(shape), linear_size)
    layers["relu_fc1"] = nn.ReLU()
    layers["fc_out"] = nn.Linear(linear_size, num_classes)
    return layers


def _cnn7(
    input_shape: Shape, num_classes: int, width: int, linear_size: int, conv5_stride: int
) -> OrderedDict[str, nn.Module]:
    """CNN7 with BatchNorm (Shi et al. 2021); ``conv5_stride=2`` is the TinyImageNet variant."""
    check_int("width", width, 1)
    check_int("linear_size", linear_size, 1)
    plan = ((width, 1), (width, 1), (2 * width, 2), (2 * width, 1), (2 * width, conv5_stride))
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    shape = input_shape
    for i, (channels, stride) in enumerate(plan, start=1):
        layers[f"conv{i}"], shape = _conv(f"conv{i}", shape, channels, 3, stride, 1)
        layers[f"bn{i}"] = nn.BatchNorm2d(channels)
        layers[f"relu{i}"] = nn.ReLU()
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(_numel(shape), linear_size)
    layers["bn_fc1"] = nn.BatchNorm1d(linear_size)
    layers["relu_fc1"] = nn.ReLU()
    layers["fc_out"] = nn.Linear(linear_size, num_classes)
    return layers


def cnn7(
    input_shape: Shape, num_classes: int, *, width: int = 64, linear_size: int = 512
) -> OrderedDict[str, nn.Module]:
    """CNN7 for CIFAR-sized inputs (one stride-2 conv: 32x32 -> 16x16)."""
    return _cnn7(input_shape, num_classes, width, linear_size, conv5_stride=1)


def cnn7_tin(
    input_shape: Shape, num_classes: int, *, width: int = 64, linear_size: int = 512
) -> OrderedDict[str, nn.Module]:
    """CNN7 for TinyImageNet (conv5 strided too: 64x64 -> 16x16 before ``fc1``)."""
    return _cnn7(input_shape, num_classes, width, linear_size, conv5_stride=2)


BUILDERS = {"mlp": mlp, "cnn_small": cnn_small, "cnn7": cnn7, "cnn7_tin": cnn7_tin}
