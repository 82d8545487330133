"""The optimiser and its per-epoch learning-rate schedule, from the config's ``optim`` group."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, MultiStepLR

from trainables.config import OptimConfig


def build_optimizer(params, config: OptimConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with momentum) as configured."""
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    optimizer = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    return optimizer(params, lr=config.lr, weight_decay=config.weight_decay)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, epochs: int
) -> LRScheduler:
    """A per-epoch learning-rate schedule; fractional milestones are fractions of ``epochs``."""
    if config.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=epochs)
    if config.schedule == "milestones":
        milestones = sorted({_milestone_epoch(m, epochs) for m in config.milestones})
        return MultiStepLR(optimizer, milestones=milestones, gamma=config.decay)
    return LambdaLR(optimizer, lambda _: 1.0)


def _milestone_epoch(milestone: float, epochs: int) -> int:
    return round(milestone * epochs) if milestone < 1 else round(milestone)
