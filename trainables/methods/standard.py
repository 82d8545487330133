"""Standard training: the cross-entropy of the clean logits."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F

from trainables.methods.base import Method, Terms
from trainables.methods.context import StepContext


class Standard(Method):
    name: Literal["standard"] = "standard"

    def loss(self, ctx: StepContext) -> Terms:
        return {"natural": F.cross_entropy(ctx.clean_logits, ctx.y)}
