"""CC-IBP (De Palma et al., ICLR 2024; expressive-losses ``train.py``): the cross-entropy
of the convex combination ``alpha lb_IBP + (1 - alpha) C f(x_adv)`` of the margins."""

from __future__ import annotations

from typing import Literal

from trainables.losses.certified import cc_ibp_loss, margins_of
from trainables.methods.base import AdversarialCombination, Terms
from trainables.methods.context import StepContext


class CCIBP(AdversarialCombination):
    name: Literal["cc-ibp"] = "cc-ibp"

    def loss(self, ctx: StepContext) -> Terms:
        adv_logits, _ = ctx.adversarial_pass()
        self.adversarial_loss(ctx)  # logged only
        bounds = ctx.margin_bounds(*self.box(ctx))
        self.ibp_loss(ctx, bounds)  # logged only
        adv_margins = margins_of(adv_logits, ctx.spec)
        per_sample = cc_ibp_loss(bounds.ibp, adv_margins, self.alpha, reduction="none")
        return {"robust": ctx.mean(per_sample)}
