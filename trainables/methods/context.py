"""What a training method's loss may ask of the step: one ``StepContext`` per batch.

The context holds the batch, the current eps and the clean forward pass, and computes the
shared pieces on first use and once per step: the step's adversarial example (PGD with the
model in eval mode, ``attacks.classification``), the student's train-mode pass on it, and
IBP / CROWN-IBP bounds of the margins. Methods call what they need; the training step
(``trainables.training.step``) reads the same pieces for the warm-up regularisers and the
distillation terms, so nothing is computed twice.

Passes other than the clean one normalise as ``bn_stats`` says (``methods.batchnorm``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from trainables.attacks.classification import AttackLoss, pgd_attack
from trainables.bounds.interval import fold_spec, propagate_intervals
from trainables.bounds.linear import ReLURelaxation, backward_lower_bound
from trainables.bounds.ops import AffineOp, DenseOp, linearize
from trainables.bounds.spec import margin_spec
from trainables.methods.batchnorm import Statistics, capture_statistics, normalise_with
from trainables.models import forward_features

if TYPE_CHECKING:  # the config imports this package: types only, no runtime dependency
    from trainables.config import AttackConfig


@dataclass
class MarginBounds:
    ibp: Tensor  # [batch, classes - 1] IBP lower bounds of the margins
    crown_ibp: Tensor | None
    relu_inputs: list[tuple[Tensor, Tensor]]  # IBP pre-activation bounds per ReLU layer
    input_box: tuple[Tensor, Tensor]  # the box as the first weight layer sees it
    features: tuple[Tensor, Tensor] | None = None  # IBP bounds after ops[:feature_ops]


def margin_bounds(
    model: nn.Sequential,
    lower: Tensor,
    upper: Tensor,
    C: Tensor,
    statistics: Statistics | None,
    with_crown_ibp: bool = False,
    feature_ops: int | None = None,
) -> MarginBounds:
    """IBP (and optionally CROWN-IBP) lower bounds of ``C f`` plus what the regularisers need.

    Only lower bounds are computed: a CROWN-IBP backward pass for one side costs half of the
    two-sided ``compute_bounds``. ``feature_ops`` also returns the IBP bounds of an
    intermediate feature (the output of the first ``feature_ops`` ops), read off the same
    propagation.
    """
    ops, _ = linearize(model, (lower + upper) / 2, statistics)
    last = ops[-1]
    if not isinstance(last, DenseOp):
        raise ValueError("certified training needs a model that ends with a Linear layer")
    stop, features = len(ops) - 1, None
    if feature_ops is not None and feature_ops < stop:
        features, relu_inputs = propagate_intervals(ops[:feature_ops], lower, upper)
        (low, high), later = propagate_intervals(ops[:stop], *features, start=feature_ops)
        relu_inputs += later
    else:
        (low, high), relu_inputs = propagate_intervals(ops[:stop], lower, upper)
        if feature_ops == stop:
            features = (low, high)
        elif feature_ops is not None:  # the logits
            features, _ = propagate_intervals(ops, low, high, start=stop)
    ibp, _ = fold_spec(C, last, low, high)
    crown_ibp = None
    if with_crown_ibp:
        relaxations = [ReLURelaxation.from_bounds(a, b) for a, b in relu_inputs]
        centre, radius = (upper + lower) / 2, (upper - lower) / 2
        crown_ibp = backward_lower_bound(ops, C, relaxations, centre, radius)
    diagonal_prefix = []
    for op in ops:
        if not (isinstance(op, AffineOp) and op.diagonal):
            break
        diagonal_prefix.append(op)
    input_box, _ = propagate_intervals(diagonal_prefix, lower, upper)
    return MarginBounds(ibp, crown_ibp, relu_inputs, input_box, features)


@dataclass
class StepContext:
    """One batch of one training step, and the shared pieces computed on demand.

    ``attack_radius`` and ``attack_loss`` define the step's adversarial example (set from
    the method); ``feature_layers`` and ``feature_ops`` are the distiller's requests (the
    features of the adversarial pass, IBP bounds at a feature); ``weights`` reweight the
    per-sample losses inside ``mean`` (SAAD on the certified loss).
    """

    model: nn.Sequential
    x: Tensor
    y: Tensor
    eps: float  # eps_t, this step's
    eps_max: float  # the run's target eps
    num_classes: int
    generator: torch.Generator
    attack: AttackConfig
    bn_stats: str
    clean_logits: Tensor
    clean_statistics: Statistics
    attack_radius: float | None = None
    attack_loss: AttackLoss | None = None
    feature_layers: tuple[str, ...] = ()
    feature_ops: int | None = None
    weights: Tensor | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    x_adv: Tensor | None = field(default=None, init=False)
    bounds: MarginBounds | None = field(default=None, init=False)  # the last ``margin_bounds``
    _adversarial: tuple[Tensor, dict[str, Tensor]] | None = field(default=None, init=False)
    _adversarial_statistics: Statistics = field(default_factory=dict, init=False)
    _spec: Tensor | None = field(default=None, init=False)

    @property
    def spec(self) -> Tensor:
        """``C``: the margin specification rows ``e_y - e_j`` (``bounds.margin_spec``)."""
        if self._spec is None:
            self._spec = margin_spec(self.y, self.num_classes, dtype=self.x.dtype)
        return self._spec

    def mean(self, per_sample: Tensor) -> Tensor:
        """The batch mean, weighted per sample by ``weights`` when set."""
        return (per_sample if self.weights is None else self.weights * per_sample).mean()

    def adversarial_example(self) -> Tensor:
        """The step's x_adv: PGD in ``B(x, attack_radius)`` (once per step)."""
        if self.x_adv is None:
            if self.attack_radius is None:
                raise ValueError("this method defines no attack radius")
            attack = self.attack
            self.x_adv = pgd_attack(
                self.model,
                self.x,
                self.y,
                self.attack_radius,
                steps=attack.steps,
                restarts=attack.restarts,
                step_size=attack.step_size,
                loss=self.attack_loss or attack.loss,
                generator=self.generator,
            )
        return self.x_adv

    def adversarial_pass(self) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits and ``feature_layers`` on x_adv (once per step)."""
        if self._adversarial is None:
            x_adv = self.adversarial_example()
            with capture_statistics(self.model) as captured:
                self._adversarial = self.forward(x_adv, self.feature_layers)
            self._adversarial_statistics = captured
        return self._adversarial

    def forward(self, x: Tensor, layers: tuple[str, ...] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        """A train-mode pass under the step's BatchNorm convention (logits, features)."""
        statistics = self.clean_statistics if self.bn_stats == "clean" else {}
        with normalise_with(self.model, statistics):
            return forward_features(self.model, x, layers)

    def margin_bounds(
        self, lower: Tensor, upper: Tensor, with_crown_ibp: bool = False
    ) -> MarginBounds:
        """Bounds of the margins over ``[lower, upper]`` (kept in ``bounds`` for the step)."""
        self.bounds = margin_bounds(
            self.model,
            lower,
            upper,
            self.spec,
            self._bound_statistics(),
            with_crown_ibp=with_crown_ibp,
            feature_ops=self.feature_ops,
        )
        return self.bounds

    def _bound_statistics(self) -> Statistics | None:
        if self.bn_stats == "clean":
            return self.clean_statistics
        if self.bn_stats == "own":
            return None  # the box centre's own statistics
        if self.x_adv is not None:
            self.adversarial_pass()
        return self._adversarial_statistics or self.clean_statistics
