"""SABR (Mueller et al. 2023): the IBP loss on a small box of radius ``sabr_lambda x eps``
around the step's adversarial example (``losses.certified.sabr_box``).

The attack searches ``B(x, eps_t x train_eps_factor x attack_eps_factor)`` and the small box
stays inside the bound box ``B(x, eps_t x train_eps_factor)``, as in CTRAIN's
``bound/sabr.py`` (expressive-losses scales the whole box by ``attack_eps_factor``; both
agree at the default factor 1).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import Tensor

from trainables.losses.certified import sabr_box
from trainables.methods.base import CertifiedMethod, Terms
from trainables.methods.context import StepContext


class SABR(CertifiedMethod):
    uses_attack: ClassVar[bool] = True

    name: Literal["sabr"] = "sabr"
    sabr_lambda: float = Field(0.4, gt=0, le=1, description="sabr: box radius / eps")

    def box(self, ctx: StepContext) -> tuple[Tensor, Tensor]:
        x_adv = ctx.adversarial_example()
        return sabr_box(ctx.x, x_adv, self.bound_radius(ctx.eps), self.sabr_lambda)

    def loss(self, ctx: StepContext) -> Terms:
        return {"robust": self.ibp_loss(ctx, ctx.margin_bounds(*self.box(ctx)))}
