"""SAAD per-sample weights (Lee & Chung 2025) from the teacher's response to the student's x_adv.

The paper's argument: a student-crafted adversarial example teaches most when it also
transfers to the teacher. Three scores, selectable:

* ``entropy`` (the public code's proxy): Renyi entropy (order gamma, 1 = Shannon) of the
  teacher's softmax on x_adv, shifted by the batch minimum: ``w = max(0, s (H - min H))``;
* ``transfer``: ``w = s`` where x_adv changes the teacher's prediction on x, else 0;
* ``margin``: the drop of the teacher's probability margin ``p_y - max_{j != y} p_j`` from x
  to x_adv (in [-2, 2]), clamped at 0: ``w = s max(0, drop)``.

``wbar`` is the min-max normalised copy of ``w`` within the batch (0 when all are equal),
used by the inverse-weighted clean term ``(1 - wbar) KL(T(x) || S(x))``. The weights come
from teacher outputs only and carry no gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Weighting = Literal["entropy", "transfer", "margin"]


def renyi_entropy(logits: Tensor, gamma: float) -> Tensor:
    """``H_gamma(p) = log(sum_i p_i^gamma) / (1 - gamma)`` of ``softmax(logits)``, per sample.

    ``gamma = 1`` is the Shannon limit. Computed in log space for stability.
    """
    log_p = torch.log_softmax(logits, dim=1)
    if gamma == 1:
        return -(log_p.exp() * log_p).sum(dim=1)
    return torch.logsumexp(gamma * log_p, dim=1) / (1 - gamma)


def probability_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``p_y - max_{j != y} p_j`` per sample."""
    p = torch.softmax(logits, dim=1)
    true = p.gather(1, labels[:, None]).squeeze(1)
    others = p.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
    return true - others


def minmax_normalise(weights: Tensor) -> Tensor:
    """``(w - min w) / (max w - min w)`` over the batch; all zeros when the weights are equal."""
    low, high = weights.min(), weights.max()
    if high <= low:
        return torch.zeros_like(weights)
    return (weights - low) / (high - low)


@torch.no_grad()
def saad_weights(
    weighting: Weighting,
    teacher_adv_logits: Tensor,
    *,
    teacher_clean_logits: Tensor | None = None,
    labels: Tensor | None = None,
    gamma: float = 1.0,
    scale: float = 5.0,
) -> tuple[Tensor, Tensor]:
    """``(w, wbar)`` per sample (see the module docstring), detached.

    ``transfer`` needs ``teacher_clean_logits``; ``margin`` needs them and ``labels``.
    """
    if weighting == "entropy":
        entropy = renyi_entropy(teacher_adv_logits, gamma)
        weights = (scale * (entropy - entropy.min())).clamp(min=0)
    elif teacher_clean_logits is None:
        raise ValueError(f"SAAD weighting {weighting!r} needs the teacher's clean logits")
    elif weighting == "transfer":
        changed = teacher_adv_logits.argmax(dim=1) != teacher_clean_logits.argmax(dim=1)
        weights = scale * changed.to(teacher_adv_logits.dtype)
    else:
        if labels is None:
            raise ValueError("SAAD weighting 'margin' needs the labels")
        drop = probability_margin(teacher_clean_logits, labels) - probability_margin(
            teacher_adv_logits, labels
        )
        weights = scale * drop.clamp(min=0)
    return weights, minmax_normalise(weights)
