"""PGD adversarial training (Madry et al. 2018): the cross-entropy on the step's x_adv."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F

from trainables.methods.base import AdversarialMethod, Terms
from trainables.methods.context import StepContext


class PGDAT(AdversarialMethod):
    name: Literal["pgd-at"] = "pgd-at"

    def loss(self, ctx: StepContext) -> Terms:
        adv_logits, _ = ctx.adversarial_pass()
        return {"robust": F.cross_entropy(adv_logits, ctx.y)}
