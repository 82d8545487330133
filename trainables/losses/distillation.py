"""Distillation terms from a (non-certified) teacher, per sample, for a certified student.

Feature space (CC-Dist, De Palma 2026): the student side is the convex combination, with
CC-IBP's alpha, of its adversarial features and the IBP bound of its features that lies
farther from the teacher's clean feature in each coordinate; alpha = 1 distils the worst
case over the box, alpha = 0 the adversarial point. Logit space (ARD / RSLAD / AD-CERT
style): temperature-scaled KL between teacher and student distributions.

Every function returns one value per sample so that SAAD weights can multiply them before
the batch mean.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Distance = Literal["l2", "cosine"]


def worst_case_features(lower: Tensor, upper: Tensor, target: Tensor) -> Tensor:
    """Per coordinate, the bound farther from ``target`` (ties take ``upper``)."""
    return torch.where((lower - target).abs() > (upper - target).abs(), lower, upper)


def linear_interval(layer: nn.Linear, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """IBP through a linear map: the bounds of ``layer(z)`` for ``z`` in ``[lower, upper]``."""
    centre = layer((upper + lower) / 2)
    radius = F.linear((upper - lower) / 2, layer.weight.abs())
    return centre - radius, centre + radius


def feature_distance(student: Tensor, teacher: Tensor, distance: Distance) -> Tensor:
    """``l2``: squared L2 distance divided by the dimension (so beta does not depend on the
    layer's width); ``cosine``: ``1 - cos``. Inputs are flattened per sample."""
    student, teacher = student.flatten(1), teacher.flatten(1)
    if distance == "l2":
        return (student - teacher).pow(2).mean(dim=1)
    return 1 - F.cosine_similarity(student, teacher, dim=1)


def cc_feature_term(
    adv_features: Tensor | None,
    bounds: tuple[Tensor, Tensor] | None,
    teacher_features: Tensor,
    alpha: float,
    distance: Distance = "l2",
    projection: nn.Linear | None = None,
) -> Tensor:
    """CC-Dist's per-sample feature term (see the module docstring).

    ``adv_features`` may be None when ``alpha == 1`` and ``bounds`` when ``alpha == 0``.
    A ``projection`` maps student features (and, soundly, their bounds) to the teacher's
    dimension.
    """
    target = teacher_features.flatten(1)
    parts = []
    if alpha < 1:
        if adv_features is None:
            raise ValueError(f"alpha={alpha} < 1 needs the student's adversarial features")
        adv = adv_features.flatten(1)
        parts.append((1 - alpha) * (adv if projection is None else projection(adv)))
    if alpha > 0:
        if bounds is None:
            raise ValueError(f"alpha={alpha} > 0 needs the student's IBP feature bounds")
        lower, upper = (b.flatten(1) for b in bounds)
        if projection is not None:
            lower, upper = linear_interval(projection, lower, upper)
        parts.append(alpha * worst_case_features(lower, upper, target))
    return feature_distance(sum(parts), target, distance)


def kl_with_temperature(
    teacher_logits: Tensor, student_logits: Tensor, temperature: float
) -> Tensor:
    """``T^2 KL(softmax(t / T) || softmax(s / T))`` per sample (Hinton et al.'s scaling keeps
    the gradient size independent of ``T``)."""
    teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    student = F.log_softmax(student_logits / temperature, dim=1)
    kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(dim=1)
    return temperature**2 * kl


def worst_case_logits(margin_lower: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Logits whose margins are the lower bounds: ``z_y = 0``, ``z_j = -lb_j`` for ``j != y``.

    Their cross-entropy is the IBP loss; their softmax is the student's worst case over the
    box, which the logit objective with ``inputs="ibp"`` compares with the teacher's.
    ``margin_lower`` has the rows of ``margin_spec`` (classes ``j != y`` in increasing order).
    """
    batch = labels.shape[0]
    others = torch.arange(num_classes, device=labels.device).expand(batch, -1)
    keep = others != labels.unsqueeze(1)
    logits = margin_lower.new_zeros(batch, num_classes)
    return logits.masked_scatter(keep, -margin_lower)
