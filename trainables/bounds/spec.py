"""Specification matrices for robustness: margins ``z_y - z_j`` as rows of ``C``."""

from __future__ import annotations

import torch
from torch import Tensor


def margin_spec(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``C`` of shape ``[batch, num_classes - 1, num_classes]`` with rows ``e_y - e_j``, j != y.

    A sample is certified when every row's lower bound over the input box is positive.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D [batch], got shape {tuple(labels.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got {labels.tolist()}")
    batch = labels.shape[0]
    eye = torch.eye(num_classes, dtype=dtype, device=labels.device)
    C = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # [batch, classes, classes]
    others = torch.arange(num_classes, device=labels.device).expand(batch, -1)
    keep = others != labels.unsqueeze(1)
    return C[keep].view(batch, num_classes - 1, num_classes)
