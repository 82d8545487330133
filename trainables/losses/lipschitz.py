"""Margin losses for 1-Lipschitz networks: deel-torchlip's multiclass hinge and HKR.

A Lipschitz network's certificate grows with its logit margin (``certify.lipschitz``), so it
is trained to push margins up, not to fit probabilities: the hinge term asks each logit to
lie ``min_margin / 2`` on the correct side of 0; HKR (Serrurier et al. 2021) adds the
Kantorovich-Rubinstein term, weighted ``1 - alpha``, which spreads the classes apart.
The library's own functions are used (imported on first use: an optional dependency).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def hkr_loss(logits: Tensor, y: Tensor, alpha: float, min_margin: float) -> Tensor:
    """Mean multiclass HKR loss of ``logits`` for labels ``y``; ``alpha=1`` is the hinge."""
    try:
        from deel.torchlip.functional import hkr_multiclass_loss
    except ImportError as err:
        raise ImportError(
            "the hinge/hkr methods need deel-torchlip: pip install 'certsweep[lipschitz]'"
        ) from err
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return hkr_multiclass_loss(logits, target, alpha, min_margin).mean()
