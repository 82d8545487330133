"""Turn a ``torch.nn.Sequential`` into the affine maps and ReLUs that bound propagation needs.

Every supported layer except ReLU is affine on its input (BatchNorm and the model's
``Normalize`` per channel, AvgPool2d as a depthwise convolution, Flatten as a reshape).
Each affine op offers three views of the same map ``x -> M x + b``:

* ``forward(x)``: ``M x + b`` (propagates interval centres and the reference input);
* ``abs_forward(r)``: ``|M| r`` (propagates interval radii);
* ``backward(A)``: ``(A M, A b)`` for a batch of linear functionals ``A`` of shape
  ``[batch, specs, *out_shape]`` (the backward pass of CROWN).

The ops are rebuilt on every call from the live modules, so gradients flow to the weights
and BatchNorm in train mode can use the statistics of this call's reference batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.models.layers import Normalize


class UnsupportedLayerError(TypeError):
    """A model contains a layer the bound propagation cannot handle."""


SUPPORTED_LAYERS = (
    "Linear",
    "Conv2d",
    "ReLU",
    "Flatten",
    "BatchNorm1d",
    "BatchNorm2d",
    "AvgPool2d",
    "Normalize",
    "Identity",
)


class AffineOp:
    """An affine map ``x -> M x + b`` on a batch (see the module docstring)."""

    #: True when M is diagonal (elementwise): IBP through it is exact.
    diagonal: bool = False

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def abs_forward(self, r: Tensor) -> Tensor:
        raise NotImplementedError

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


@dataclass
class ReLUOp:
    """Marker for an elementwise ReLU; relaxations are chosen by the bound methods."""


Op = AffineOp | ReLUOp


@dataclass
class DenseOp(AffineOp):
    weight: Tensor  # [out, in]
    bias: Tensor | None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def abs_forward(self, r: Tensor) -> Tensor:
        return F.linear(r, self.weight.abs())

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        bias = A @ self.bias if self.bias is not None else A.new_zeros(A.shape[:2])
        return A @ self.weight, bias


@dataclass
class ConvOp(AffineOp):
    weight: Tensor  # [out_ch, in_ch / groups, kh, kw]
    bias: Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    in_shape: tuple[int, int, int]

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(x, self.weight, self.bias)

    def abs_forward(self, r: Tensor) -> Tensor:
        return self._conv(r, self.weight.abs(), None)

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        batch, specs, channels, height, width = A.shape
        flat = A.reshape(batch * specs, channels, height, width)
        output_padding = tuple(
            size - ((out - 1) * s - 2 * p + d * (k - 1) + 1)
            for size, out, s, p, d, k in zip(
                self.in_shape[1:],
                (height, width),
                self.stride,
                self.padding,
                self.dilation,
                self.weight.shape[2:],
                strict=True,
            )
        )
        back = F.conv_transpose2d(
            flat,
            self.weight,
            None,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )
        if self.bias is None:
            bias = A.new_zeros(batch, specs)
        else:
            bias = torch.einsum("bschw,c->bs", A, self.bias)
        return back.reshape(batch, specs, *self.in_shape), bias


@dataclass
class ChannelAffineOp(AffineOp):
    """``scale[c] * x + shift[c]`` along dimension 1 (BatchNorm, Normalize)."""

    scale: Tensor  # [C]
    shift: Tensor  # [C]
    spatial_dims: int  # 0 for [B, C], 2 for [B, C, H, W]
    diagonal = True

    def _view(self, t: Tensor, lead: int) -> Tensor:
        return t.view(*([1] * lead), -1, *([1] * self.spatial_dims))

    def forward(self, x: Tensor) -> Tensor:
        return x * self._view(self.scale, 1) + self._view(self.shift, 1)

    def abs_forward(self, r: Tensor) -> Tensor:
        return r * self._view(self.scale.abs(), 1)

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        shifted = A * self._view(self.shift, 2)
        return A * self._view(self.scale, 2), shifted.flatten(2).sum(-1)


@dataclass
class ReshapeOp(AffineOp):
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    diagonal = True

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    abs_forward = forward

    def backward(self, A: Tensor) -> tuple[Tensor, Tensor]:
        return A.reshape(*A.shape[:2], *self.in_shape), A.new_zeros(A.shape[:2])


def flatten_sequential(model: nn.Module) -> Iterator[nn.Module]:
    """Yield the leaf layers of a (possibly nested) ``nn.Sequential`` in order."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayerError(
            f"bound propagation needs a torch.nn.Sequential, got {type(model).__name__}; "
            f"supported layers: {', '.join(SUPPORTED_LAYERS)}"
        )
    for child in model:
        if isinstance(child, nn.Sequential):
            yield from flatten_sequential(child)
        else:
            yield child


def op_count(model: nn.Sequential) -> int:
    """How many ops ``linearize(model)`` makes: one per leaf layer except Identity."""
    return sum(not isinstance(layer, nn.Identity) for layer in flatten_sequential(model))


#: Batch statistics ``(mean, biased variance)`` per BatchNorm layer, e.g. captured from the
#: clean forward pass of a training step (see ``trainables.training.batchnorm``).
BatchStatistics = Mapping[nn.Module, tuple[Tensor, Tensor]]


def linearize(
    model: nn.Sequential, reference: Tensor, statistics: BatchStatistics | None = None
) -> tuple[list[Op], Tensor]:
    """Build the op list of ``model``, tracing shapes (and BatchNorm statistics) on ``reference``.

    Returns the ops and the output of the traced forward pass (on the first sample only
    when no layer needs statistics from ``reference``).

    ``reference`` is a batch in the model's input shape. BatchNorm layers that use batch
    statistics (train mode, or no running statistics) take them from ``statistics`` when it
    has an entry for the layer, else from this batch's forward pass, never updating the
    running statistics; eval-mode BatchNorm uses the running ones.
    """
    layers = list(flatten_sequential(model))
    statistics = statistics or {}
    if not any(_uses_batch_statistics(layer) and layer not in statistics for layer in layers):
        reference = reference[:1]  # only shapes are traced: one sample is enough
    ops: list[Op] = []
    activation = reference
    for index, layer in enumerate(layers):
        op = _layer_op(layer, activation, index, statistics)
        if op is None:
            continue
        activation = torch.relu(activation) if isinstance(op, ReLUOp) else op.forward(activation)
        ops.append(op)
    return ops, activation


def _uses_batch_statistics(layer: nn.Module) -> bool:
    return isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d) and (
        layer.training or not layer.track_running_stats
    )


def _layer_op(
    layer: nn.Module, activation: Tensor, index: int, statistics: BatchStatistics
) -> Op | None:
    where = f"layer {index} ({type(layer).__name__})"
    if isinstance(layer, nn.Identity):
        return None
    if isinstance(layer, nn.ReLU):
        return ReLUOp()
    if isinstance(layer, nn.Linear):
        _expect_dims(activation, 2, where)
        return DenseOp(layer.weight, layer.bias)
    if isinstance(layer, nn.Conv2d):
        _expect_dims(activation, 4, where)
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise UnsupportedLayerError(
                f"{where}: only numeric zero padding is supported, got "
                f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r}"
            )
        return ConvOp(
            layer.weight,
            layer.bias,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            tuple(activation.shape[1:]),
        )
    if isinstance(layer, nn.AvgPool2d):
        return _avgpool_op(layer, activation, where)
    if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
        return _batchnorm_op(layer, activation, where, statistics.get(layer))
    if isinstance(layer, Normalize):
        _expect_dims(activation, 4, where)
        return ChannelAffineOp(layer.scale, layer.shift, spatial_dims=2)
    if isinstance(layer, nn.Flatten):
        if layer.start_dim != 1 or layer.end_dim != -1:
            raise UnsupportedLayerError(f"{where}: only Flatten(start_dim=1, end_dim=-1)")
        in_shape = tuple(activation.shape[1:])
        return ReshapeOp(in_shape, (activation[0].numel(),))
    raise UnsupportedLayerError(
        f"{where}: layer type {type(layer).__name__} is not supported by bound propagation; "
        f"supported: {', '.join(SUPPORTED_LAYERS)}"
    )


def _expect_dims(activation: Tensor, dims: int, where: str) -> None:
    if activation.dim() != dims:
        raise UnsupportedLayerError(
            f"{where}: expects a {dims}-D input, got shape {tuple(activation.shape)}"
        )


def _avgpool_op(layer: nn.AvgPool2d, activation: Tensor, where: str) -> ConvOp:
    """AvgPool2d is the depthwise convolution with a constant kernel 1 / (kh * kw)."""
    _expect_dims(activation, 4, where)
    if layer.ceil_mode or not layer.count_include_pad or layer.divisor_override is not None:
        raise UnsupportedLayerError(
            f"{where}: only ceil_mode=False, count_include_pad=True, divisor_override=None"
        )
    kh, kw = nn.modules.utils._pair(layer.kernel_size)
    channels = activation.shape[1]
    kernel = activation.new_full((channels, 1, kh, kw), 1.0 / (kh * kw))
    stride = nn.modules.utils._pair(layer.stride if layer.stride is not None else (kh, kw))
    return ConvOp(
        kernel,
        None,
        stride,
        nn.modules.utils._pair(layer.padding),
        (1, 1),
        channels,
        tuple(activation.shape[1:]),
    )


def _batchnorm_op(
    layer: nn.BatchNorm1d | nn.BatchNorm2d,
    activation: Tensor,
    where: str,
    given: tuple[Tensor, Tensor] | None,
) -> ChannelAffineOp:
    """BatchNorm as a per-channel affine map with the statistics PyTorch would use.

    ``given`` replaces the batch statistics of ``activation`` (train mode only).
    """
    spatial_dims = activation.dim() - 2
    if isinstance(layer, nn.BatchNorm1d) and spatial_dims != 0:
        raise UnsupportedLayerError(f"{where}: BatchNorm1d is supported on [batch, features]")
    if isinstance(layer, nn.BatchNorm2d):
        _expect_dims(activation, 4, where)
    if _uses_batch_statistics(layer) and given is not None:
        mean, var = given
    elif _uses_batch_statistics(layer):
        reduce = [0, *range(2, activation.dim())]
        mean = activation.mean(dim=reduce)
        var = activation.var(dim=reduce, unbiased=False)
    else:
        mean, var = layer.running_mean, layer.running_var
    return ChannelAffineOp(*batchnorm_affine(layer, mean, var), spatial_dims)


def batchnorm_affine(layer: nn.Module, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` of a BatchNorm normalising with ``mean`` and ``var``.

    Written out because ``F.batch_norm`` rejects statistics that carry gradients.
    """
    scale = torch.rsqrt(var + layer.eps)
    if layer.weight is not None:
        scale = scale * layer.weight
    shift = -mean * scale
    if layer.bias is not None:
        shift = shift + layer.bias
    return scale, shift


def fuse_affine(ops: list[Op], dense: bool = True) -> list[Op]:
    """The same map with every per-channel affine op folded into the Linear/Conv before it.

    ``BatchNorm(W x + b) = (s W) x + (s b + t)``: exact, and it saves the elementwise passes
    of the channel op in every propagation. A channel op after a ReLU or at the start (the
    input ``Normalize``) is kept: folding it into the next convolution would change what
    that convolution's zero padding means. ``dense=False`` folds into convolutions only:
    a large Linear's weight costs more to rescale (and to differentiate through, in
    training) than the few activations its BatchNorm touches.
    """
    layers = (DenseOp, ConvOp) if dense else (ConvOp,)
    fused: list[Op] = []
    for op in ops:
        previous = fused[-1] if fused else None
        if isinstance(op, ChannelAffineOp) and isinstance(previous, layers):
            fused[-1] = _fold_channel_affine(previous, op)
        else:
            fused.append(op)
    return fused


def _fold_channel_affine(op: DenseOp | ConvOp, channel: ChannelAffineOp) -> DenseOp | ConvOp:
    view = (-1,) + (1,) * (op.weight.dim() - 1)
    weight = op.weight * channel.scale.view(view)
    bias = channel.shift if op.bias is None else op.bias * channel.scale + channel.shift
    if isinstance(op, DenseOp):
        return DenseOp(weight, bias)
    return replace(op, weight=weight, bias=bias)


def detached(ops: list[Op]) -> list[Op]:
    """The same ops with every tensor detached from autograd (bounds that optimise their own
    parameters, like alpha-CROWN, must not build graphs through the model's weights)."""
    result: list[Op] = []
    for op in ops:
        tensors = {
            field.name: getattr(op, field.name).detach()
            for field in fields(op)
            if isinstance(getattr(op, field.name), Tensor)
        }
        result.append(replace(op, **tensors))
    return result


#: ``densify`` turns a convolution into a matrix when the matrix has at most this many entries.
DENSE_CONV_ELEMENTS = 2**22


def densify(ops: list[Op], max_elements: int = DENSE_CONV_ELEMENTS) -> list[Op]:
    """The same map with small convolutions as (reshape, matrix, reshape).

    A matrix product is much cheaper than a transposed convolution for tiny images,
    especially under autograd and in float64 (alpha-CROWN and branch and bound run hundreds
    of backward passes through the same layers). The matrix is read off the convolution of
    the unit basis, which is exact: each entry is one weight.
    """
    result: list[Op] = []
    for op in ops:
        in_size = int(torch.Size(op.in_shape).numel()) if isinstance(op, ConvOp) else 0
        if not isinstance(op, ConvOp) or in_size * _conv_out_size(op) > max_elements:
            result.append(op)
            continue
        basis = torch.eye(in_size, dtype=op.weight.dtype, device=op.weight.device)
        columns = op._conv(basis.view(in_size, *op.in_shape), op.weight, None)
        out_shape = tuple(columns.shape[1:])
        matrix = columns.reshape(in_size, -1).T
        bias = None
        if op.bias is not None:
            bias = op.bias.view(-1, 1, 1).expand(out_shape).reshape(-1)
        result += [
            ReshapeOp(op.in_shape, (in_size,)),
            DenseOp(matrix, bias),
            ReshapeOp((matrix.shape[0],), out_shape),
        ]
    return result


def _conv_out_size(op: ConvOp) -> int:
    sizes = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, p, d, k, s in zip(
            op.in_shape[1:], op.padding, op.dilation, op.weight.shape[2:], op.stride, strict=True
        )
    ]
    return op.weight.shape[0] * sizes[0] * sizes[1]
