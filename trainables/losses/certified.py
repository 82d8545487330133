"""Certified-training losses on logit margins (De Palma et al., ICLR 2024).

A margin vector ``m`` holds lower bounds (or values) of ``z_y - z_j`` for every ``j != y``
(rows of ``trainables.bounds.margin_spec``). Cross-entropy of the logit vector ``[0, -m]``
with target 0 is ``log(1 + sum_j exp(-m_j))``: it equals the cross-entropy of the logits when
``m`` are the exact margins, and the IBP loss when ``m`` are IBP lower bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def margin_cross_entropy(margins: Tensor, reduction: str = "mean") -> Tensor:
    """``log(1 + sum_j exp(-m_j))`` per sample, computed stably with logsumexp."""
    zero = margins.new_zeros(margins.shape[0], 1)
    per_sample = torch.logsumexp(torch.cat([zero, -margins], dim=1), dim=1)
    return per_sample.mean() if reduction == "mean" else per_sample


def margins_of(logits: Tensor, C: Tensor) -> Tensor:
    """``C z``: the margins ``z_y - z_j`` of concrete logits ``z`` under spec ``C``."""
    return torch.einsum("bso,bo->bs", C, logits)


def cc_ibp_loss(
    bound_margins: Tensor, adv_margins: Tensor, alpha: float, reduction: str = "mean"
) -> Tensor:
    """CC-IBP: the loss of the convex combination ``alpha lb + (1 - alpha) C f(x_adv)``."""
    return margin_cross_entropy(alpha * bound_margins + (1 - alpha) * adv_margins, reduction)


def mtl_ibp_loss(ibp_loss: Tensor, adv_loss: Tensor, alpha: float) -> Tensor:
    """MTL-IBP: ``alpha L_IBP + (1 - alpha) L_adv``."""
    return alpha * ibp_loss + (1 - alpha) * adv_loss


def exp_ibp_loss(ibp_loss: Tensor, adv_loss: Tensor, alpha: float) -> Tensor:
    """Exp-IBP: ``L_IBP^alpha L_adv^(1 - alpha)`` (both losses are positive)."""
    return ibp_loss**alpha * adv_loss ** (1 - alpha)


def sabr_box(
    x: Tensor, x_adv: Tensor, eps: float, lam: float, lower: float = 0.0, upper: float = 1.0
) -> tuple[Tensor, Tensor]:
    """SABR's small box (Mueller et al. 2023): radius ``tau = lam eps`` around ``x_adv``.

    As in SABR's ``adv_attack.py`` and expressive-losses' ``compute_sabr_perturbation``
    (``utils.py``), the centre is clamped into the CLIPPED box shrunk by tau,
    ``[max(x - eps, 0) + tau, min(x + eps, 1) - tau]``, so that a box at a pixel on 0 or 1
    keeps its full width ``2 tau``; the small box is then clipped to the data range. (For
    ``lam > 0.5`` a clipped box can be narrower than ``2 tau``; the centre then sits at its
    upper end, as with the reference's ``torch.clamp``.)
    """
    radius = lam * eps
    big_lower, big_upper = (x - eps).clamp(lower, upper), (x + eps).clamp(lower, upper)
    centre = torch.clamp(x_adv, big_lower + radius, big_upper - radius)
    return (centre - radius).clamp(lower, upper), (centre + radius).clamp(lower, upper)


def l1_penalty(model: nn.Module) -> Tensor:
    """``sum |W|`` over the weights of every Linear and Conv2d layer."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    return sum(w.abs().sum() for w in weights)
