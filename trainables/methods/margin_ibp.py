"""A toy method (scratch: shows what adding a method takes): a hinge on the IBP margins."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainables.methods.base import CertifiedMethod, Terms
from trainables.methods.context import StepContext


class MarginIBP(CertifiedMethod):
    """Hinge on the IBP margin bounds."""

    name: Literal["margin-ibp"] = "margin-ibp"
    margin: float = Field(1.0, gt=0, description="the margin the bounds must clear")

    def loss(self, ctx: StepContext) -> Terms:
        bounds = ctx.margin_bounds(*self.box(ctx))
        return {"robust": ctx.mean((self.margin - bounds.ibp).relu().sum(dim=1))}
