"""CROWN-IBP (Zhang et al. 2020) as Shi et al. and auto_LiRPA train it: the BOUNDS are mixed,
``lb = f lb_CROWN-IBP + (1 - f) lb_IBP`` (``examples/vision/cifar_training.py``:
``f = (eps_max - eps_t) / eps_max``), then one cross-entropy ``L = CE([0, -lb])``.

``f`` runs from ``crown_bound_weight_start`` at eps 0 to ``crown_bound_weight_end`` at
``eps_max``, linearly in ``eps_t / eps_max`` (defaults 1 and 0: auto_LiRPA's factor). The
CROWN-IBP pass is skipped when ``f = 0``. CTRAIN's clean-loss weight
(``train/certified/crown_ibp.py``: ``kappa CE(f(x), y) + (1 - kappa) L``) is an option,
``clean_loss_weight_start`` / ``_end`` along the same ramp (default 0: no clean loss).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from trainables.losses.certified import margin_cross_entropy
from trainables.methods.base import CertifiedMethod, Terms
from trainables.methods.context import StepContext
from trainables.schedules import along_ramp


class CrownIBP(CertifiedMethod):
    name: Literal["crown-ibp"] = "crown-ibp"
    crown_bound_weight_start: float = Field(
        1.0, ge=0, le=1, description="weight f of the CROWN-IBP bound at eps 0"
    )
    crown_bound_weight_end: float = Field(
        0.0, ge=0, le=1, description="f at eps_max (lb = f lb_CROWN-IBP + (1 - f) lb_IBP)"
    )
    clean_loss_weight_start: float = Field(
        0.0, ge=0, le=1, description="CTRAIN's kappa at eps 0 (weight of the clean CE)"
    )
    clean_loss_weight_end: float = Field(0.0, ge=0, le=1, description="kappa at eps_max")

    def loss(self, ctx: StepContext) -> Terms:
        f = along_ramp(
            self.crown_bound_weight_start, self.crown_bound_weight_end, ctx.eps, ctx.eps_max
        )
        kappa = along_ramp(
            self.clean_loss_weight_start, self.clean_loss_weight_end, ctx.eps, ctx.eps_max
        )
        bounds = ctx.margin_bounds(*self.box(ctx), with_crown_ibp=f > 0)
        self.ibp_loss(ctx, bounds)  # logged only
        lower = bounds.ibp
        if bounds.crown_ibp is not None:
            crown = margin_cross_entropy(bounds.crown_ibp, reduction="none")
            ctx.diagnostics["crown_ibp_loss"] = crown.mean().item()
            lower = f * bounds.crown_ibp + (1 - f) * bounds.ibp
        robust = ctx.mean(margin_cross_entropy(lower, reduction="none"))
        ctx.diagnostics["crown_bound_weight"] = f
        ctx.diagnostics["clean_loss_weight"] = kappa
        if kappa == 0:
            return {"robust": robust}
        return {
            "natural": kappa * F.cross_entropy(ctx.clean_logits, ctx.y),
            "robust": (1 - kappa) * robust,
        }
