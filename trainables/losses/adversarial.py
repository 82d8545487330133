"""Adversarial-training losses for empirically robust teachers (PGD-AT, TRADES)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def trades_kl(clean_logits: Tensor, adv_logits: Tensor, reduction: str = "batchmean") -> Tensor:
    """``KL(p(x) || p(x_adv))`` summed over classes (Zhang et al. 2019's robust term)."""
    return F.kl_div(
        F.log_softmax(adv_logits, dim=1),
        F.log_softmax(clean_logits, dim=1),
        reduction=reduction,
        log_target=True,
    )


def trades_loss(clean_logits: Tensor, adv_logits: Tensor, labels: Tensor, beta: float) -> Tensor:
    """TRADES: ``CE(f(x), y) + beta KL(p(x) || p(x_adv))``."""
    return F.cross_entropy(clean_logits, labels) + beta * trades_kl(clean_logits, adv_logits)
