"""The interface every training method implements: its settings and one loss.

A method is a pydantic model (its settings, validated as the config's ``method`` group;
``name`` is the discriminator) with one ``loss(ctx) -> terms``: additive loss terms whose
sum the step minimises, computed from what the ``StepContext`` offers. Class attributes
declare what the method needs from the step, so that the step can prepare it and other
parts can ask without a list of names:

* ``family``: ``standard``, ``certified`` (bounds; warm-up regularisers; may distil from a
  teacher), ``adversarial`` (may train a teacher), ``smoothing`` or ``lipschitz``;
* ``uses_attack`` / ``uses_adversarial_pass``: the step's adversarial example / the
  student's pass on it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from trainables.attacks.classification import AttackLoss, linf_box
from trainables.losses.certified import margin_cross_entropy
from trainables.methods.context import MarginBounds, StepContext

Family = Literal["standard", "certified", "adversarial", "smoothing", "lipschitz"]
Terms = dict[str, Tensor]

#: Smallest bound radius: at eps_t = 0 the bounds (and the warm-up terms) still exist.
MIN_BOUND_EPS = 1e-6


class Method(BaseModel):
    """Settings shared by every method, and the interface (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    family: ClassVar[Family] = "standard"
    uses_attack: ClassVar[bool] = False
    uses_adversarial_pass: ClassVar[bool] = False
    attack_loss: ClassVar[AttackLoss | None] = None  # None: the ``attack.loss`` setting

    name: str
    l1: float = Field(0.0, ge=0, le=1, description="L1 penalty on conv/linear weights")

    def attack_radius(self, eps: float) -> float | None:
        """The radius of the step's adversarial example at ``eps_t = eps`` (None: none)."""
        return None

    def loss(self, ctx: StepContext) -> Terms:
        raise NotImplementedError


class CertifiedMethod(Method):
    """Bounds the margins on ``B(x, eps_t x train_eps_factor)``; its attack box (also the
    distillation's) is ``B(x, eps_t x train_eps_factor x attack_eps_factor)``: the factors
    compose, as in expressive-losses ``train.py`` and CTRAIN ``train/certified/mtl_ibp.py``.
    """

    family: ClassVar[Family] = "certified"

    train_eps_factor: float = Field(1.0, gt=0, le=10, description="bound box = eps x this")
    attack_eps_factor: float = Field(
        1.0, gt=0, le=10, description="attack box = eps x train_eps_factor x this"
    )

    def bound_radius(self, eps: float) -> float:
        return max(eps * self.train_eps_factor, MIN_BOUND_EPS)

    def attack_radius(self, eps: float) -> float:
        return eps * self.train_eps_factor * self.attack_eps_factor

    def box(self, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """The input box the bounds cover (SABR: a small box inside it)."""
        return linf_box(ctx.x, self.bound_radius(ctx.eps))

    @staticmethod
    def ibp_loss(ctx: StepContext, bounds: MarginBounds) -> Tensor:
        """``L_IBP`` (``ctx.mean`` of the per-sample losses); logs the unweighted mean."""
        per_sample = margin_cross_entropy(bounds.ibp, reduction="none")
        ctx.diagnostics["ibp_loss"] = per_sample.mean().item()
        return ctx.mean(per_sample)

    @staticmethod
    def adversarial_loss(ctx: StepContext) -> Tensor:
        """``L_adv``: cross-entropy on the step's x_adv; logs the unweighted mean."""
        logits, _ = ctx.adversarial_pass()
        per_sample = F.cross_entropy(logits, ctx.y, reduction="none")
        ctx.diagnostics["adv_loss"] = per_sample.mean().item()
        return ctx.mean(per_sample)


class AdversarialMethod(Method):
    """Trains on a PGD example in ``B(x, eps_t x attack_eps_factor)`` (teachers)."""

    family: ClassVar[Family] = "adversarial"
    uses_attack: ClassVar[bool] = True
    uses_adversarial_pass: ClassVar[bool] = True

    attack_eps_factor: float = Field(1.0, gt=0, le=10, description="attack box = eps x this")

    def attack_radius(self, eps: float) -> float:
        return eps * self.attack_eps_factor


class AdversarialCombination(CertifiedMethod):
    """The expressive losses (De Palma et al., ICLR 2024): a certified and an adversarial
    part combined with weight ``alpha`` (also CC-Dist's feature weight by default)."""

    uses_attack: ClassVar[bool] = True
    uses_adversarial_pass: ClassVar[bool] = True

    alpha: float = Field(0.5, ge=0, le=1, description="weight of the bound side")
