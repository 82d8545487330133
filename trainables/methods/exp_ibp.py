"""Exp-IBP (De Palma et al., ICLR 2024): ``L_IBP^alpha L_adv^(1 - alpha)``."""

from __future__ import annotations

from typing import Literal

from trainables.losses.certified import exp_ibp_loss
from trainables.methods.base import AdversarialCombination, Terms
from trainables.methods.context import StepContext


class ExpIBP(AdversarialCombination):
    name: Literal["exp-ibp"] = "exp-ibp"

    def loss(self, ctx: StepContext) -> Terms:
        adv_loss = self.adversarial_loss(ctx)
        ibp_loss = self.ibp_loss(ctx, ctx.margin_bounds(*self.box(ctx)))
        return {"robust": exp_ibp_loss(ibp_loss, adv_loss, self.alpha)}
