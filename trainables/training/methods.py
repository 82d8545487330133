"""One training step's loss for every method: standard, certified (IBP family), adversarial,
Gaussian noise (randomized smoothing) and margin losses (Lipschitz networks).

Every step starts with the clean forward pass (through the DDP wrapper when distributed, so
DDP sees exactly one forward per step); it updates the BatchNorm running statistics and,
under the ``clean`` convention, supplies the statistics every other pass uses
(``batchnorm.py``). Attacks run with the model in eval mode (``attacks.classification``).
Certified methods bound the margins ``C f(x)`` on the training box
``B(x, eps_t * train_eps_factor)``; their attack box is
``B(x, eps_t * train_eps_factor * attack_eps_factor)`` (the factors compose, as in
expressive-losses ``train.py`` and CTRAIN); adversarial methods attack in
``B(x, eps_t * attack_eps_factor)``.

A step returns additive loss terms: the total is exactly their sum, and the loop logs each.
With a teacher, a ``Distiller`` (``distillation.py``) adds its terms to the certified loss,
reusing the step's adversarial pass and bound propagation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.attacks.classification import linf_box, pgd_attack
from trainables.bounds.interval import fold_spec, propagate_intervals
from trainables.bounds.linear import ReLURelaxation, backward_lower_bound
from trainables.bounds.ops import AffineOp, DenseOp, linearize
from trainables.bounds.spec import margin_spec
from trainables.config import LIPSCHITZ_METHODS, TrainConfig
from trainables.losses.adversarial import trades_kl
from trainables.losses.certified import (
    cc_ibp_loss,
    exp_ibp_loss,
    l1_penalty,
    margin_cross_entropy,
    margins_of,
    mtl_ibp_loss,
    sabr_box,
)
from trainables.losses.lipschitz import hkr_loss
from trainables.losses.regularizers import relu_balance_term, tightness_term
from trainables.losses.saad import mean_one
from trainables.models import forward_features
from trainables.schedules import along_ramp, warmup_weight
from trainables.training.batchnorm import Statistics, capture_statistics, normalise_with
from trainables.training.distillation import Distiller, StudentOutputs

#: Smallest bound radius: at eps_t = 0 the bounds (and the warm-up terms) still exist.
MIN_BOUND_EPS = 1e-6


@dataclass
class StepOutput:
    """The loss of one step, its additive parts and what the loop logs besides."""

    terms: dict[str, Tensor]  # additive: total == sum(terms.values())
    logits: Tensor  # clean logits (train accuracy)
    diagnostics: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        return sum(self.terms.values())


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


class MethodStep:
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
        with capture_statistics(self.model) as captured:
            logits = self.forward(x)
        statistics = captured if self.config.bn_stats == "clean" else None
        name = self.method.name
        if name == "standard":
            out = StepOutput({"natural": F.cross_entropy(logits, y)}, logits)
        elif name in ("pgd-at", "trades"):
            out = self._adversarial(x, y, eps, logits, statistics)
        elif name == "gaussian":
            out = self._gaussian(x, y, logits, statistics)
        elif name in LIPSCHITZ_METHODS:
            alpha = 1.0 if name == "hinge" else self.method.hkr_alpha
            out = StepOutput({"margin": hkr_loss(logits, y, alpha, self.method.min_margin)}, logits)
        else:
            out = self._certified(x, y, eps, logits, captured, progress)
        if self.method.l1 > 0:
            out.terms["l1"] = self.method.l1 * l1_penalty(self.model)
        return out

    # -- adversarial training (teachers) ---------------------------------------------------

    def _adversarial(
        self, x: Tensor, y: Tensor, eps: float, logits: Tensor, statistics: Statistics | None
    ) -> StepOutput:
        trades = self.method.name == "trades"
        x_adv = self._attack(
            x, y, eps * self.method.attack_eps_factor, "trades" if trades else None
        )  # no bound box here: the attack radius is eps_t x attack_eps_factor
        adv_logits, _ = self._forward_with(x_adv, statistics)
        if not trades:
            return StepOutput({"robust": F.cross_entropy(adv_logits, y)}, logits)
        terms = {
            "natural": F.cross_entropy(logits, y),
            "robust": self.method.trades_beta * trades_kl(logits, adv_logits),
        }
        return StepOutput(terms, logits)

    # -- randomized smoothing --------------------------------------------------------------

    def _gaussian(
        self, x: Tensor, y: Tensor, logits: Tensor, statistics: Statistics | None
    ) -> StepOutput:
        """Cross-entropy on ``x + N(0, sigma^2 I)`` (Cohen et al. 2019): the base classifier
        of a smoothed one must classify noisy inputs. Not clipped to [0, 1], as at
        certification (``certify.smoothing``)."""
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        noisy_logits, _ = self._forward_with(x + self.method.sigma * noise, statistics)
        return StepOutput({"noisy": F.cross_entropy(noisy_logits, y)}, logits)

    # -- certified training ----------------------------------------------------------------

    def _certified(
        self,
        x: Tensor,
        y: Tensor,
        eps: float,
        logits: Tensor,
        clean_statistics: Statistics,
        progress: float,
    ) -> StepOutput:
        """The certified loss; with a distiller also its terms (``training.distillation``).

        With ``saad.on_certified`` each per-sample loss inside the certified loss is
        weighted by SAAD's ``w`` rescaled to mean 1 in the batch (``losses.saad.mean_one``)
        before its batch mean; the diagnostics stay unweighted. Under ``bn_stats:
        adversarial`` the bounds normalise with the statistics of the student's adversarial
        pass when the step makes one (expressive-losses ``train.py``: the bounds use the
        last forward pass's statistics), else with the clean batch's.
        """
        method, name, distiller = self.method, self.method.name, self.distiller
        convention = self.config.bn_stats
        statistics = clean_statistics if convention == "clean" else None
        eps_max = self.config.eps
        bound_eps = max(eps * method.train_eps_factor, MIN_BOUND_EPS)
        attack_eps = eps * method.train_eps_factor * method.attack_eps_factor
        C = margin_spec(y, self.num_classes, dtype=x.dtype)
        diagnostics: dict[str, float] = {}
        combines_adv = name in ("cc-ibp", "mtl-ibp", "exp-ibp")
        x_adv = adv_logits = None
        adv_features: dict[str, Tensor] = {}
        if name == "sabr" or combines_adv or (distiller is not None and distiller.needs_x_adv):
            x_adv = self._attack(x, y, attack_eps)
        step_pass = combines_adv or (distiller is not None and distiller.needs_adv_pass)
        if convention == "adversarial" and x_adv is not None:
            step_pass = True
        adv_statistics: Statistics = {}
        if step_pass and x_adv is not None:
            layers = () if distiller is None else distiller.student_layers
            with capture_statistics(self.model) as adv_statistics:
                adv_logits, adv_features = self._forward_with(x_adv, statistics, layers)
        bound_statistics = statistics
        if convention == "adversarial":
            bound_statistics = adv_statistics or clean_statistics
        teaching = student = None
        if distiller is not None:
            distill_x_adv, distill_logits, distill_features = x_adv, adv_logits, adv_features
            if distiller.own_attack:
                distill_x_adv = distiller.adversarial_example(
                    self.model, x, y, attack_eps, self.generator
                )
                if distiller.needs_adv_pass:
                    distill_logits, distill_features = self._forward_with(
                        distill_x_adv, statistics, distiller.student_layers
                    )
            teaching = distiller.teach(x, distill_x_adv, y)
            mirrored = None
            if distiller.igdm:
                mirrored, _ = self._forward_with(2 * x - distill_x_adv, statistics)
            student = StudentOutputs(
                y, logits, distill_logits, distill_features, None, None, mirrored
            )
        on_certified = teaching is not None and self.config.saad.on_certified
        weights = mean_one(teaching.weights) if on_certified else None

        def mean(per_sample: Tensor) -> Tensor:
            return (per_sample if weights is None else weights * per_sample).mean()

        if combines_adv:
            adv_per_sample = F.cross_entropy(adv_logits, y, reduction="none")
            adv_loss = mean(adv_per_sample)
            diagnostics["adv_loss"] = adv_per_sample.mean().item()
        if name == "sabr":
            lower, upper = sabr_box(x, x_adv, bound_eps, method.sabr_lambda)
        else:
            lower, upper = linf_box(x, bound_eps)
        crown_weight = along_ramp(
            method.crown_bound_weight_start, method.crown_bound_weight_end, eps, eps_max
        )
        bounds = margin_bounds(
            self.model,
            lower,
            upper,
            C,
            bound_statistics,
            with_crown_ibp=name == "crown-ibp" and crown_weight > 0,
            feature_ops=None if distiller is None else distiller.feature_ops,
        )
        ibp_per_sample = margin_cross_entropy(bounds.ibp, reduction="none")
        ibp_loss = mean(ibp_per_sample)
        diagnostics["ibp_loss"] = ibp_per_sample.mean().item()
        terms: dict[str, Tensor] = {}
        if name in ("ibp", "sabr"):
            robust = ibp_loss
        elif name == "crown-ibp":
            lower_bound = bounds.ibp
            if bounds.crown_ibp is not None:
                crown_per_sample = margin_cross_entropy(bounds.crown_ibp, reduction="none")
                diagnostics["crown_ibp_loss"] = crown_per_sample.mean().item()
                lower_bound = crown_weight * bounds.crown_ibp + (1 - crown_weight) * bounds.ibp
            robust = mean(margin_cross_entropy(lower_bound, reduction="none"))
            clean_weight = along_ramp(
                method.clean_loss_weight_start, method.clean_loss_weight_end, eps, eps_max
            )
            if clean_weight > 0:
                terms["natural"] = clean_weight * F.cross_entropy(logits, y)
                robust = (1 - clean_weight) * robust
            diagnostics["crown_bound_weight"] = crown_weight
            diagnostics["clean_loss_weight"] = clean_weight
        elif name == "cc-ibp":
            adv_margins = margins_of(adv_logits, C)
            robust = mean(cc_ibp_loss(bounds.ibp, adv_margins, method.alpha, reduction="none"))
        elif name == "mtl-ibp":
            robust = mtl_ibp_loss(ibp_loss, adv_loss, method.alpha)
        else:
            robust = exp_ibp_loss(ibp_loss, adv_loss, method.alpha)
        terms["robust"] = robust
        weight = warmup_weight(self.config.warmup.weight, eps, eps_max)
        if weight > 0:
            terms.update(self._warmup_terms(bounds, weight))
        if distiller is not None:
            student.feature_bounds, student.margin_lower = bounds.features, bounds.ibp
            terms.update(distiller.terms(teaching, student, progress))
        return StepOutput(terms, logits, diagnostics)

    def _warmup_terms(self, bounds: MarginBounds, weight: float) -> dict[str, Tensor]:
        warmup = self.config.warmup
        terms = {}
        if "tightness" in warmup.terms:
            tightness = tightness_term(bounds.input_box, bounds.relu_inputs, warmup.tau)
            terms["warmup_tightness"] = weight * tightness
        if "relu" in warmup.terms:
            terms["warmup_relu"] = weight * relu_balance_term(bounds.relu_inputs, warmup.tau)
        return terms

    # -- shared pieces ---------------------------------------------------------------------

    def _attack(self, x: Tensor, y: Tensor, eps: float, loss: str | None = None) -> Tensor:
        attack = self.config.attack
        return pgd_attack(
            self.model,
            x,
            y,
            eps,
            steps=attack.steps,
            restarts=attack.restarts,
            step_size=attack.step_size,
            loss=loss or attack.loss,
            generator=self.generator,
        )

    def _forward_with(
        self, x: Tensor, statistics: Statistics | None, layers: tuple[str, ...] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """A train-mode forward pass under the step's BatchNorm convention (logits, features)."""
        with normalise_with(self.model, statistics or {}):
            return forward_features(self.model, x, layers)
