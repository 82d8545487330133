"""Margin losses for 1-Lipschitz networks (``losses.lipschitz``: deel-torchlip's multiclass
hinge and HKR, Serrurier et al. 2021)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from trainables.losses.lipschitz import hkr_loss
from trainables.methods.base import Family, Method, Terms
from trainables.methods.context import StepContext


class Hinge(Method):
    family: ClassVar[Family] = "lipschitz"

    name: Literal["hinge"] = "hinge"
    min_margin: float = Field(1.0, gt=0, le=100, description="logit margin the hinge term asks for")

    def loss(self, ctx: StepContext) -> Terms:
        return {"margin": hkr_loss(ctx.clean_logits, ctx.y, 1.0, self.min_margin)}


class HKR(Hinge):
    name: Literal["hkr"] = "hkr"  # type: ignore[assignment]
    hkr_alpha: float = Field(
        0.98, ge=0, le=1, description="hinge weight; 1 - hkr_alpha weighs the KR term"
    )

    def loss(self, ctx: StepContext) -> Terms:
        return {"margin": hkr_loss(ctx.clean_logits, ctx.y, self.hkr_alpha, self.min_margin)}
