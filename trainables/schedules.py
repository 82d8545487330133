"""Schedules stepped per batch along the eps ramp: eps itself and the weights that follow it.

The smoothed eps schedule is Shi et al. (2021)'s (``EpsSchedule``); the warm-up weight and
CROWN-IBP's mixing weights follow ``eps_t / eps_max``. Steps count batches from 0 over the
whole run, so a resumed run only needs the step index. (The learning-rate schedule is built
with the optimiser: ``trainables.training.optim``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EpsSchedule:
    """eps at a global batch index ``t`` (0-based).

    ``smoothed``: 0 before ``init``; ``a (t - init)^4`` up to ``mid``; linear to ``eps_max``
    at ``final``; held after. ``a`` makes the slope continuous at ``mid``.
    ``linear``: 0 before ``init``, linear to ``eps_max`` at ``final``. ``constant``: always
    ``eps_max``. ``init = (start - 1) E``, ``final = (start + length - 1) E``,
    ``mid = init + floor(0.25 (final - init))`` with ``E`` batches per epoch.
    """

    eps_max: float
    batches_per_epoch: int
    start: int = 1
    length: int = 20
    kind: Literal["smoothed", "linear", "constant"] = "smoothed"

    def __post_init__(self) -> None:
        if self.batches_per_epoch < 1 or self.start < 1 or self.length < 1:
            raise ValueError(
                "need batches_per_epoch, start and length >= 1, got "
                f"{self.batches_per_epoch}, {self.start}, {self.length}"
            )

    @property
    def init(self) -> int:
        return (self.start - 1) * self.batches_per_epoch

    @property
    def final(self) -> int:
        return (self.start + self.length - 1) * self.batches_per_epoch

    @property
    def mid(self) -> int:
        return self.init + math.floor(0.25 * (self.final - self.init))

    def __call__(self, t: int) -> float:
        if self.kind == "constant" or t >= self.final:
            return self.eps_max
        if t <= self.init:
            return 0.0
        if self.kind == "linear":
            return self.eps_max * (t - self.init) / (self.final - self.init)
        ramp, head = self.final - self.mid, self.mid - self.init
        if head == 0:  # ramps shorter than 4 batches: the linear part is all there is
            return self.eps_max * (t - self.init) / (self.final - self.init)
        a = self.eps_max / (ramp * 4 * head**3 + head**4)
        if t <= self.mid:
            return a * (t - self.init) ** 4
        eps_mid = a * head**4
        return eps_mid + (self.eps_max - eps_mid) * (t - self.mid) / ramp


def ramp_fraction(eps: float, eps_max: float) -> float:
    """``eps / eps_max`` in [0, 1] (1 when there is no ramp because ``eps_max`` is 0)."""
    return 1.0 if eps_max <= 0 else min(max(eps / eps_max, 0.0), 1.0)


def warmup_weight(lambda0: float, eps: float, eps_max: float) -> float:
    """Weight of Shi et al.'s warm-up regularisers: ``lambda0 (1 - eps_t / eps_max)``."""
    return lambda0 * (1.0 - ramp_fraction(eps, eps_max))


def along_ramp(start: float, end: float, eps: float, eps_max: float) -> float:
    """``start`` at eps 0, ``end`` at ``eps_max``, linear in ``eps / eps_max`` between.

    CROWN-IBP's mixing weights (Zhang et al. 2020; auto_LiRPA's
    ``examples/vision/cifar_training.py``: ``factor = (eps_max - eps) / eps_max`` for start 1,
    end 0) follow the eps ramp this way.
    """
    return start + (end - start) * ramp_fraction(eps, eps_max)
