"""Backward coefficients of convolutional neurons in patches form (receptive fields only).

Full CROWN bounds every unstable neuron of every intermediate layer with its own backward
pass. For a neuron of a convolutional layer, the coefficients of that pass on an earlier
activation are zero outside the neuron's receptive field, so storing them as full images
(``[rows, C, H, W]``) wastes memory and transposed-convolution work. ``Patches`` stores
the coefficients on a window ``[C, kh, kw]`` placed at a per-group origin instead; a
convolution backward grows the window (``(k - 1) stride + dilation (kernel - 1) + 1``)
and a ReLU multiplies by the relaxation slopes read off the same window. Once a window
covers the whole image the coefficients are converted to the dense form. The same idea is
auto_LiRPA's "patches mode" (auto_LiRPA/patches.py; operators/convolution.py,
``BoundConv.bound_backward``); the representation here is our own and simpler.

Rows come in groups: every row of group ``g`` belongs to sample ``samples[g]`` and has its
window at ``(top[g], left[g])`` (e.g. all channels of one position of one sample), so each
relaxation window is read once per group, not once per row. ``values`` has shape
``[groups, rows, kh, kw, C]`` (channels last: the transposed convolutions run up to twice
as fast on channels-last images on CPUs), or ``[1, rows, ...]`` while it is the same for
every group (before the first ReLU is met). Windows of per-sample maps are read in the
same layout.

Entries of a window that fall outside the image stand for zero padding. A transposed
convolution leaves arbitrary values there ("dirty"); a ReLU backward clears them (its slopes
are read off a zero-padded map), and every other consumer masks them first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Patches:
    """Coefficients on windows of a ``[C, H, W]`` activation, one window per row group."""

    values: Tensor  # [groups or 1, rows, kh, kw, C]
    top: Tensor  # [groups], int64: window origin (may lie outside the image)
    left: Tensor  # [groups]
    samples: Tensor  # [groups]: the sample (batch index) of each group
    shape: tuple[int, int, int]  # (C, H, W) of the activation
    dirty: bool = False  # entries outside the image may be non-zero

    @property
    def window(self) -> tuple[int, int]:
        return self.values.shape[2], self.values.shape[3]

    @property
    def groups(self) -> int:
        return self.top.numel()

    def with_values(self, values: Tensor, dirty: bool = False) -> Patches:
        return replace(self, values=values, dirty=dirty)

    def _padding(self) -> tuple[int, int, int, int]:
        """Zero padding (top, bottom, left, right) that puts every window inside the map."""
        (kh, kw), (_, height, width) = self.window, self.shape
        return (
            max(0, -int(self.top.min())),
            max(0, int(self.top.max()) + kh - height),
            max(0, -int(self.left.min())),
            max(0, int(self.left.max()) + kw - width),
        )

    def _flat_index(self, padding: tuple[int, int, int, int]) -> Tensor:
        """``[groups, kh * kw]`` positions of each window in the padded, flattened map."""
        (kh, kw), (_, _, width) = self.window, self.shape
        pad_top, _, pad_left, pad_right = padding
        dy = torch.arange(kh, device=self.top.device)
        dx = torch.arange(kw, device=self.top.device)
        ys = (self.top + pad_top)[:, None, None] + dy[None, :, None]
        xs = (self.left + pad_left)[:, None, None] + dx[None, None, :]
        return (ys * (width + pad_left + pad_right) + xs).reshape(self.groups, kh * kw)

    def windows(self, maps: Tensor) -> Tensor:
        """Each group's window of its sample's map, zero outside: ``[groups, 1, kh, kw, C]``.

        ``maps`` is ``[batch, C, H, W]``."""
        padding = self._padding()
        pad_top, pad_bottom, pad_left, pad_right = padding
        padded = F.pad(maps, (pad_left, pad_right, pad_top, pad_bottom))
        flat = padded.flatten(2).transpose(1, 2)  # [batch, positions, C]
        picked = flat[self.samples[:, None], self._flat_index(padding)]  # [groups, k, C]
        return picked.view(self.groups, 1, *self.window, maps.shape[1])

    def masked(self) -> Patches:
        """The same coefficients with the entries outside the image set to zero."""
        if not self.dirty:
            return self
        (kh, kw), (_, height, width) = self.window, self.shape
        ys = self.top[:, None] + torch.arange(kh, device=self.top.device)
        xs = self.left[:, None] + torch.arange(kw, device=self.top.device)
        inside = ((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None, :]
        mask = inside.to(self.values.dtype)[:, None, :, :, None]  # [groups, 1, kh, kw, 1]
        return self.with_values(self.values * mask)

    def to_dense(self) -> Tensor:
        """The same coefficients as full images: ``[groups, rows, C, H, W]``."""
        channels, height, width = self.shape
        pad_top, pad_bottom, pad_left, pad_right = padding = self._padding()
        padded = (height + pad_top + pad_bottom, width + pad_left + pad_right)
        values = self.values.expand(self.groups, *self.values.shape[1:])
        rows = values.shape[1]
        index = self._flat_index(padding)[:, None, :, None].expand(-1, rows, -1, channels)
        canvas = values.new_zeros(self.groups, rows, padded[0] * padded[1], channels)
        canvas = canvas.scatter(2, index, values.reshape(self.groups, rows, -1, channels))
        canvas = canvas.view(self.groups, rows, *padded, channels).permute(0, 1, 4, 2, 3)
        return canvas[..., pad_top : pad_top + height, pad_left : pad_left + width].contiguous()

    def fits_dense(self) -> bool:
        """True once a window is at least as large as the image (dense is then cheaper)."""
        (kh, kw), (_, height, width) = self.window, self.shape
        return kh * kw >= height * width


def conv_backward(
    patches: Patches,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    in_shape: tuple[int, int, int],
) -> tuple[Patches, Tensor]:
    """Coefficients on a convolution's input, and the bias term ``[groups or 1, rows]``.

    A window of the output maps to the window of the input it reads: a transposed
    convolution without padding, whose origin moves to ``origin * stride - padding``.
    """
    patches = patches.masked()
    lead, rows = patches.values.shape[:2]
    kh, kw = patches.window
    channels = patches.shape[0]
    # [lead * rows, C, kh, kw] in channels-last memory: a view of ``values``, no copy
    values = patches.values.reshape(lead * rows, kh, kw, channels).permute(0, 3, 1, 2)
    grown = F.conv_transpose2d(values, weight, None, stride, 0, 0, groups, dilation)
    if bias is None:
        shift = patches.values.new_zeros(lead, rows)
    else:
        shift = (patches.values.sum(dim=(2, 3)) @ bias).view(lead, rows)
    grown = grown.permute(0, 2, 3, 1)  # back to [N, kh', kw', C'] (channels last)
    moved = Patches(
        grown.reshape(lead, rows, *grown.shape[1:]),
        patches.top * stride[0] - padding[0],
        patches.left * stride[1] - padding[1],
        patches.samples,
        in_shape,
        dirty=True,
    )
    return moved, shift
