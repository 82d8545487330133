"""Distillation terms from a (non-certified) teacher, per sample, for a certified student.

Feature space (CC-Dist, De Palma 2026, arXiv 2602.02626; the public CTBench-derived
``CCDistModelWrapper``): per coordinate ``k`` the student's adversarial feature ``a_k`` and
its IBP feature bounds ``[l_k, u_k]`` are mixed FIRST, with CC-IBP's alpha, into two
endpoints ``(1 - alpha) a_k + alpha l_k`` and ``(1 - alpha) a_k + alpha u_k``; the term then
takes the endpoint farther from the teacher's clean feature ``t_k``:
``mean_k max(((1-alpha) a_k + alpha l_k - t_k)^2, ((1-alpha) a_k + alpha u_k - t_k)^2)``
(that wrapper adds ``5 / feat_dim`` times the sum over ``k``: ``distill.beta = 5`` here).
alpha = 0 distils the adversarial point, alpha = 1 the worst case over the box. The gradient
never widens the bounds (the farther endpoint is the lower one only when it lies below
``t``); when ``a`` lies inside ``[l, u]`` (the attack box inside the bound box) the term is
non-decreasing in alpha (a maximum of convex functions of alpha that agree at 0, one
non-decreasing there). (Picking the bound farther from ``t``
before mixing is not monotone in alpha and can loosen a bound.) Logit space (ARD / RSLAD /
AD-CERT style): temperature-scaled KL between teacher and student distributions.

Every function returns one value per sample so that SAAD weights can multiply them before
the batch mean.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Distance = Literal["l2", "cosine"]


def farther_endpoint(lower: Tensor, upper: Tensor, target: Tensor) -> Tensor:
    """Per coordinate, the endpoint of ``[lower, upper]`` farther from ``target`` (ties:
    ``upper``)."""
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
    """CC-Dist's per-sample feature term: mix, then the farther endpoint (module docstring).

    With ``l2`` this is ``mean_k max((m_lo,k - t_k)^2, (m_hi,k - t_k)^2)``; ``cosine`` compares
    the same per-coordinate farther endpoint with ``t``. ``adv_features`` may be None when
    ``alpha == 1`` and ``bounds`` when ``alpha == 0``. A ``projection`` maps the student's
    features, and soundly their interval (``linear_interval``), to the teacher's dimension.
    """
    target = teacher_features.flatten(1)
    adv = None
    if alpha < 1:
        if adv_features is None:
            raise ValueError(f"alpha={alpha} < 1 needs the student's adversarial features")
        adv = adv_features.flatten(1)
        adv = adv if projection is None else projection(adv)
    if alpha == 0:
        return feature_distance(adv, target, distance)
    if bounds is None:
        raise ValueError(f"alpha={alpha} > 0 needs the student's IBP feature bounds")
    lower, upper = (b.flatten(1) for b in bounds)
    if projection is not None:
        lower, upper = linear_interval(projection, lower, upper)
    if adv is not None:
        lower, upper = (1 - alpha) * adv + alpha * lower, (1 - alpha) * adv + alpha * upper
    return feature_distance(farther_endpoint(lower, upper, target), target, distance)


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


def igdm_term(
    teacher_plus: Tensor, teacher_minus: Tensor, student_plus: Tensor, student_minus: Tensor
) -> Tensor:
    """IGDM's gradient-matching term per sample (HongsinLee/saad ``igdm.py`` and ``saad.py``).

    With ``delta = x_adv - x``, ``*_plus`` are the logits at ``x + delta`` and ``*_minus`` at
    ``x - delta``: ``KL(softmax(T+ - T-) || softmax(S+ - S-))``, matching the student's
    finite-difference response along ``delta`` to the teacher's (temperature 1, as there).
    """
    return kl_with_temperature(teacher_plus - teacher_minus, student_plus - student_minus, 1.0)
