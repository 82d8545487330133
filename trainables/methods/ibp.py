"""IBP training (Gowal et al. 2018; with Shi et al. 2021's init and warm-up, which the step
adds): ``L_IBP = log(1 + sum_j exp(-lb_j))`` on the IBP lower bounds of the margins."""

from __future__ import annotations

from typing import Literal

from trainables.methods.base import CertifiedMethod, Terms
from trainables.methods.context import StepContext


class IBP(CertifiedMethod):
    name: Literal["ibp"] = "ibp"

    def loss(self, ctx: StepContext) -> Terms:
        return {"robust": self.ibp_loss(ctx, ctx.margin_bounds(*self.box(ctx)))}
