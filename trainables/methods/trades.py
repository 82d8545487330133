"""TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta KL(p(x) || p(x_adv))``, x_adv maximising
the KL term (``attack_loss = "trades"``)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from pydantic import Field

from trainables.attacks.classification import AttackLoss
from trainables.losses.adversarial import trades_kl
from trainables.methods.base import AdversarialMethod, Terms
from trainables.methods.context import StepContext


class TRADES(AdversarialMethod):
    attack_loss: ClassVar[AttackLoss | None] = "trades"

    name: Literal["trades"] = "trades"
    trades_beta: float = Field(6.0, ge=0, le=100, description="weight of the KL term")

    def loss(self, ctx: StepContext) -> Terms:
        adv_logits, _ = ctx.adversarial_pass()
        return {
            "natural": F.cross_entropy(ctx.clean_logits, ctx.y),
            "robust": self.trades_beta * trades_kl(ctx.clean_logits, adv_logits),
        }
