"""One training step: the clean pass, the method's loss, and the terms every method shares.

Every step starts with the clean forward pass (through the DDP wrapper when distributed, so
DDP sees exactly one forward per step); it updates the BatchNorm running statistics and,
under the ``clean`` convention, supplies the statistics every other pass uses
(``methods.batchnorm``). The configured method (``trainables.methods``) then computes its
loss on a ``StepContext``; the step prepares what the method declares it uses, in a fixed
order (the adversarial example, the student's pass on it), and adds:

* for certified methods, Shi et al.'s warm-up regularisers during the eps ramp, from the
  method's IBP bounds, and with a teacher the distiller's terms (``training.distiller``);
  with ``saad.on_certified`` the method's per-sample losses are weighted by SAAD's ``w``
  rescaled to mean 1 in the batch (``losses.saad.mean_one``);
* for every method, the L1 penalty (``method.l1``).

A step returns additive loss terms: the total is exactly their sum, and the loop logs each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from trainables.config import TrainConfig
from trainables.losses.certified import l1_penalty
from trainables.losses.regularizers import relu_balance_term, tightness_term
from trainables.losses.saad import mean_one
from trainables.methods.batchnorm import capture_statistics
from trainables.methods.context import MarginBounds, StepContext
from trainables.schedules import warmup_weight
from trainables.training.distiller import Distiller


@dataclass
class StepOutput:
    """The loss of one step, its additive parts and what the loop logs besides."""

    terms: dict[str, Tensor]  # additive: total == sum(terms.values())
    logits: Tensor  # clean logits (train accuracy)
    diagnostics: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        return sum(self.terms.values())


class TrainingStep:
    """Computes the configured method's loss for one batch (see the module docstring)."""

    def __init__(
        self,
        model: nn.Sequential,
        forward: Callable[[Tensor], Tensor],
        config: TrainConfig,
        num_classes: int,
        generator: torch.Generator,
        distiller: Distiller | None = None,
    ) -> None:
        self.model, self.forward, self.config = model, forward, config
        self.num_classes, self.generator = num_classes, generator
        self.method, self.distiller = config.method, distiller

    def __call__(self, x: Tensor, y: Tensor, eps: float, progress: float = 1.0) -> StepOutput:
        """The loss at ``eps_t = eps``; ``progress`` is ``epoch / epochs`` (1-based epoch)."""
        method, distiller, config = self.method, self.distiller, self.config
        with capture_statistics(self.model) as captured:
            logits = self.forward(x)
        ctx = StepContext(
            self.model,
            x,
            y,
            eps,
            config.eps,
            self.num_classes,
            self.generator,
            config.attack,
            config.bn_stats,
            logits,
            captured,
            attack_radius=method.attack_radius(eps),
            attack_loss=method.attack_loss,
            feature_layers=() if distiller is None else distiller.student_layers,
            feature_ops=None if distiller is None else distiller.feature_ops,
        )
        self._prepare(ctx)
        teaching = student = None
        if distiller is not None:
            teaching, student = distiller.prepare(ctx)
            if config.saad.on_certified and teaching.weights is not None:
                ctx.weights = mean_one(teaching.weights)
        terms = method.loss(ctx)
        if method.family == "certified":
            weight = warmup_weight(config.warmup.weight, eps, config.eps)
            if weight > 0:
                terms.update(self._warmup_terms(ctx.bounds, weight))
        if distiller is not None:
            terms.update(distiller.terms(teaching, student, ctx.bounds, progress))
        if method.l1 > 0:
            terms["l1"] = method.l1 * l1_penalty(self.model)
        return StepOutput(terms, logits, ctx.diagnostics)

    def _prepare(self, ctx: StepContext) -> None:
        """The step's x_adv and the student's pass on it, before any teacher pass.

        Made when the method or the distiller uses them, and the pass also whenever there
        is an x_adv under ``bn_stats: adversarial`` (its statistics normalise the bounds).
        """
        method, distiller = self.method, self.distiller
        if method.uses_attack or (distiller is not None and distiller.needs_x_adv):
            ctx.adversarial_example()
        wants_pass = method.uses_adversarial_pass or self.config.bn_stats == "adversarial"
        if distiller is not None and distiller.needs_adv_pass:
            wants_pass = True
        if ctx.x_adv is not None and wants_pass:
            ctx.adversarial_pass()

    def _warmup_terms(self, bounds: MarginBounds, weight: float) -> dict[str, Tensor]:
        warmup = self.config.warmup
        terms = {}
        if "tightness" in warmup.terms:
            tightness = tightness_term(bounds.input_box, bounds.relu_inputs, warmup.tau)
            terms["warmup_tightness"] = weight * tightness
        if "relu" in warmup.terms:
            terms["warmup_relu"] = weight * relu_balance_term(bounds.relu_inputs, warmup.tau)
        return terms
