"""Adversarial-training losses for empirically robust teachers (PGD-AT, TRADES)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from trainables.attacks.classification import trades_kl


def trades_loss(clean_logits: Tensor, adv_logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """TRADES: ``CE(f(x), y) + beta KL(p(x) || p(x_adv))``."""
    return F.cross_entropy(clean_logits, labels) + beta * trades_kl(clean_logits, adv_logits)
