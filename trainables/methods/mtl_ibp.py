"""MTL-IBP (De Palma et al., ICLR 2024): ``alpha L_IBP + (1 - alpha) L_adv``."""

from __future__ import annotations

from typing import Literal

from trainables.losses.certified import mtl_ibp_loss
from trainables.methods.base import AdversarialCombination, Terms
from trainables.methods.context import StepContext


class MTLIBP(AdversarialCombination):
    name: Literal["mtl-ibp"] = "mtl-ibp"

    def loss(self, ctx: StepContext) -> Terms:
        adv_loss = self.adversarial_loss(ctx)
        ibp_loss = self.ibp_loss(ctx, ctx.margin_bounds(*self.box(ctx)))
        return {"robust": mtl_ibp_loss(ibp_loss, adv_loss, self.alpha)}
