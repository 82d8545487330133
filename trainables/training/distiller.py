"""The distillation part of a certified training step: teacher passes, SAAD, loss terms.

The training step (``training.step``) asks a ``Distiller`` what the step must provide
(``needs_x_adv``: the step's adversarial example; ``needs_adv_pass``: the student's pass on
it, with the features ``student_layers``; ``feature_ops``: IBP bounds at the feature layer,
taken from the bound propagation the method makes anyway), then calls ``prepare`` before
the method's loss (at most one teacher forward pass, on clean, adversarial and, for IGDM,
mirrored inputs together; the SAAD weights) and ``terms`` after it. The teacher runs on
clean inputs only when a term needs it and on x_adv only for SAAD, IGDM and adversarial
logit KL, so SAAD's entropy weights add no pass when the logit objective already looks at
x_adv.

With ``saad.attack: teacher_kl`` the distillation terms and SAAD's weights use the x_adv of
SAAD's own inner attack (``losses.saad.teacher_kl_attack``) in the step's attack box
instead of the step's PGD; the certified loss keeps the method's attack.

Terms: ``distill = beta * mean_i(w_i d_i)`` with ``w_i`` the SAAD weights (1 without SAAD)
and ``d_i`` the per-sample feature or logit term; with SAAD and ``saad.igdm_weight > 0``
also ``distill_igdm = beta * igdm_weight * (epoch / epochs) * mean_i(w_i g_i)`` with ``g_i``
IGDM's gradient-matching term at ``x +- (x_adv - x)`` (the SAAD script's
``w (KL_adv + IGDM)``); with SAAD and ``saad.clean_weight > 0`` also
``distill_clean = clean_weight * mean_i((1 - wbar_i) KL_T(T(x_i) || S(x_i)))``.

The feature term's bound weight is ``distill.alpha``, by default the method's own ``alpha``
(CC-Dist uses CC-IBP's), and ``DEFAULT_FEATURE_ALPHA`` for methods without one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainables.bounds.ops import op_count
from trainables.config import ConfigError, TrainConfig
from trainables.losses.distillation import (
    cc_feature_term,
    igdm_term,
    kl_with_temperature,
    worst_case_logits,
)
from trainables.losses.saad import saad_weights, teacher_kl_attack
from trainables.methods.context import MarginBounds, StepContext
from trainables.models import feature_names, feature_prefix, forward_features
from trainables.models.modes import eval_mode
from trainables.teachers.loading import Teacher

#: CC-Dist's bound weight for methods without an ``alpha`` (IBP, CROWN-IBP, SABR).
DEFAULT_FEATURE_ALPHA = 0.5


@dataclass
class Teaching:
    """The teacher's outputs for one batch, and the SAAD weights derived from them."""

    clean_logits: Tensor | None = None
    clean_features: Tensor | None = None
    adv_logits: Tensor | None = None
    mirrored_logits: Tensor | None = None  # at x - (x_adv - x), for IGDM
    weights: Tensor | None = None  # SAAD w (no gradient)
    normalised: Tensor | None = None  # SAAD wbar


@dataclass
class StudentOutputs:
    """The student's side of the distillation terms, from the step."""

    labels: Tensor
    clean_logits: Tensor
    adv_logits: Tensor | None  # on the distillation x_adv
    adv_features: dict[str, Tensor]
    mirrored_logits: Tensor | None = None  # at x - (x_adv - x), for IGDM


class Distiller:
    """Distillation from a frozen teacher for one run (see the module docstring)."""

    def __init__(
        self,
        config: TrainConfig,
        teacher: Teacher,
        student: nn.Sequential,
        input_shape: tuple[int, int, int],
        num_classes: int,
    ) -> None:
        self.teacher, self.num_classes = teacher, num_classes
        self.distill, self.saad = config.distill, config.saad
        distill, saad = self.distill, self.saad
        self.alpha = distill.alpha
        if self.alpha is None:
            self.alpha = getattr(config.method, "alpha", DEFAULT_FEATURE_ALPHA)
        feature = distill.objective == "feature"
        logit_inputs = None if feature else distill.inputs
        adv_logit = logit_inputs in ("adv", "both")
        self.projection: nn.Linear | None = None
        self.student_layers: tuple[str, ...] = ()
        self.feature_ops: int | None = None
        if feature:
            _check_layer("distill.layer", distill.layer, student)
            _check_layer("distill.teacher_layer", distill.teacher_layer, teacher.model)
            if self.alpha < 1:
                self.student_layers = (distill.layer,)
            if self.alpha > 0:
                self.feature_ops = op_count(nn.Sequential(*feature_prefix(student, distill.layer)))
            self.projection = self._projection(student, input_shape)
        self.igdm = saad.enabled and saad.igdm_weight > 0
        #: SAAD's own attack replaces the step's x_adv for the distillation terms.
        self.own_attack = saad.enabled and saad.attack == "teacher_kl"
        self._student_adv = bool(self.student_layers) or adv_logit or self.igdm
        uses_x_adv = saad.enabled or self._student_adv
        #: What the step must provide: its x_adv, and the student's forward pass on it.
        self.needs_x_adv = uses_x_adv and not self.own_attack
        self.needs_adv_pass = self._student_adv and not self.own_attack
        self._teacher_adv = saad.enabled or adv_logit
        self._teacher_clean = (
            feature
            or logit_inputs in ("clean", "both", "ibp")
            or (saad.enabled and (saad.weighting != "entropy" or saad.clean_weight > 0))
        )

    def prepare(self, ctx: StepContext) -> tuple[Teaching, StudentOutputs]:
        """Before the method's loss: x_adv, the student's and the teacher's passes, weights."""
        x, y = ctx.x, ctx.y
        x_adv, adv_logits, adv_features = None, None, {}
        if self.own_attack:
            x_adv = self._saad_attack(ctx)
            if self._student_adv:
                adv_logits, adv_features = ctx.forward(x_adv, self.student_layers)
        elif self.needs_x_adv:
            x_adv = ctx.adversarial_example()
            if self.needs_adv_pass:
                adv_logits, adv_features = ctx.adversarial_pass()
        teaching = self.teach(x, x_adv, y)
        mirrored = ctx.forward(2 * x - x_adv)[0] if self.igdm else None
        student = StudentOutputs(y, ctx.clean_logits, adv_logits, adv_features, mirrored)
        return teaching, student

    def _saad_attack(self, ctx: StepContext) -> Tensor:
        """SAAD's own x_adv (``saad.attack: teacher_kl``) in the step's attack box; its time
        counts as teacher time."""
        saad = self.saad
        started = time.perf_counter()
        x_adv = teacher_kl_attack(
            ctx.model,
            self.teacher.model,
            ctx.x,
            ctx.y,
            ctx.attack_radius,
            steps=saad.attack_steps,
            step_size=saad.attack_step_size,
            linearisation=saad.linearisation,
            generator=ctx.generator,
        )
        self.teacher.seconds += time.perf_counter() - started
        return x_adv

    def teach(self, x: Tensor, x_adv: Tensor | None, labels: Tensor) -> Teaching:
        """Run the teacher (one pass) on what the terms need; compute SAAD weights."""
        layers = (self.distill.teacher_layer,) if self.distill.objective == "feature" else ()
        inputs = []
        if self._teacher_clean:
            inputs.append(x)
        if self._teacher_adv or self.igdm:
            if x_adv is None:
                raise ValueError("the distillation terms need the step's adversarial examples")
            inputs.append(x_adv)
        if self.igdm:
            inputs.append(2 * x - x_adv)
        logits, features = self.teacher(torch.cat(inputs) if len(inputs) > 1 else inputs[0], layers)
        chunks = iter(logits.split(len(x)))
        teaching = Teaching()
        if self._teacher_clean:
            teaching.clean_logits = next(chunks)
            if layers:
                teaching.clean_features = features[layers[0]][: len(x)]
        if self._teacher_adv or self.igdm:
            teaching.adv_logits = next(chunks)
        if self.igdm:
            teaching.mirrored_logits = next(chunks)
        if self.saad.enabled:
            teaching.weights, teaching.normalised = saad_weights(
                self.saad.weighting,
                teaching.adv_logits,
                teacher_clean_logits=teaching.clean_logits,
                labels=labels,
                gamma=self.saad.gamma,
                scale=self.saad.scale,
            )
        return teaching

    def terms(
        self,
        teaching: Teaching,
        student: StudentOutputs,
        bounds: MarginBounds,
        progress: float = 1.0,
    ) -> dict[str, Tensor]:
        """``distill`` (+ ``distill_igdm``, ``distill_clean`` with SAAD); see the docstring.

        ``bounds`` are the method's (feature bounds, margin lower bounds); ``progress`` is
        ``epoch / epochs`` (1-based epoch), IGDM's ramp.
        """
        weights = teaching.weights
        per_sample = self._per_sample(teaching, student, bounds)
        if weights is not None:
            per_sample = per_sample * weights
        beta = self.distill.beta
        terms = {"distill": beta * per_sample.mean()}
        if self.igdm:
            igdm = igdm_term(
                teaching.adv_logits,
                teaching.mirrored_logits,
                student.adv_logits,
                student.mirrored_logits,
            )
            terms["distill_igdm"] = (
                beta * self.saad.igdm_weight * progress * (weights * igdm).mean()
            )
        if self.saad.enabled and self.saad.clean_weight > 0:
            clean = kl_with_temperature(
                teaching.clean_logits, student.clean_logits, self.distill.temperature
            )
            inverse = 1 - teaching.normalised
            terms["distill_clean"] = self.saad.clean_weight * (inverse * clean).mean()
        return terms

    def _per_sample(
        self, teaching: Teaching, student: StudentOutputs, bounds: MarginBounds
    ) -> Tensor:
        distill = self.distill
        if distill.objective == "feature":
            return cc_feature_term(
                student.adv_features.get(distill.layer),
                bounds.features,
                teaching.clean_features,
                self.alpha,
                distill.distance,
                self.projection,
            )
        temperature, inputs = distill.temperature, distill.inputs
        if inputs == "ibp":
            worst = worst_case_logits(bounds.ibp, student.labels, self.num_classes)
            return kl_with_temperature(teaching.clean_logits, worst, temperature)
        terms = []
        if inputs in ("clean", "both"):
            terms.append(
                kl_with_temperature(teaching.clean_logits, student.clean_logits, temperature)
            )
        if inputs in ("adv", "both"):
            terms.append(kl_with_temperature(teaching.adv_logits, student.adv_logits, temperature))
        return sum(terms)

    def _projection(self, student: nn.Sequential, input_shape: tuple[int, ...]) -> nn.Linear | None:
        """A linear map student -> teacher features when configured (or needed, for auto)."""
        layer, teacher_layer, mode = (
            self.distill.layer,
            self.distill.teacher_layer,
            self.distill.projection,
        )
        student_dim = _feature_dim(student, layer, input_shape)
        teacher_dim = _feature_dim(self.teacher.model, teacher_layer, input_shape)
        if mode is False and student_dim != teacher_dim:
            raise ConfigError(
                f"distill.projection is false, but distill.layer={layer!r} has {student_dim}"
                f" features and distill.teacher_layer={teacher_layer!r} has {teacher_dim}:"
                " set distill.projection to auto or true"
            )
        if mode is True or (mode == "auto" and student_dim != teacher_dim):
            device = next(student.parameters()).device
            return nn.Linear(student_dim, teacher_dim).to(device)
        return None


def _check_layer(key: str, name: str, model: nn.Sequential) -> None:
    available = feature_names(model)
    if name not in available:
        raise ConfigError(f"{key}={name!r} is not a feature of the model; available: {available}")


def _feature_dim(model: nn.Sequential, name: str, input_shape: tuple[int, ...]) -> int:
    """The flattened size of feature ``name`` (one probe sample, eval mode, no gradient)."""
    probe = next(model.parameters()).new_zeros(1, *input_shape)
    with torch.no_grad(), eval_mode(model):
        _, features = forward_features(model, probe, [name])
    return features[name][0].numel()
