"""Gaussian data augmentation (Cohen et al. 2019): the base classifier of a smoothed one is
trained on ``x + N(0, sigma^2 I)``, not clipped to [0, 1], as at certification
(``certify.smoothing``)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from trainables.methods.base import Family, Method, Terms
from trainables.methods.context import StepContext


class Gaussian(Method):
    family: ClassVar[Family] = "smoothing"

    name: Literal["gaussian"] = "gaussian"
    sigma: float = Field(0.25, gt=0, le=10, description="noise std (L2, pixels)")

    def loss(self, ctx: StepContext) -> Terms:
        x = ctx.x
        noise = torch.randn(x.shape, generator=ctx.generator, dtype=x.dtype).to(x.device)
        noisy_logits, _ = ctx.forward(x + self.sigma * noise)
        return {"noisy": F.cross_entropy(noisy_logits, ctx.y)}
