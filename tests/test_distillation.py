"""Distillation and SAAD terms against hand-computed values, and one distilled step.

Hand values use two classes or two features so that every number can be checked on paper:
softmax([0, 0]) = [1/2, 1/2], softmax([ln 3, 0]) = [3/4, 1/4].
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.bounds.interval import propagate_intervals
from trainables.bounds.ops import linearize, op_count
from trainables.bounds.spec import margin_spec
from trainables.config import ConfigError, load_config
from trainables.losses.certified import margin_cross_entropy
from trainables.losses.distillation import (
    cc_feature_term,
    farther_endpoint,
    feature_distance,
    kl_with_temperature,
    linear_interval,
    worst_case_logits,
)
from trainables.losses.saad import minmax_normalise, renyi_entropy, saad_weights
from trainables.methods.context import margin_bounds
from trainables.models import build_model, feature_names, feature_prefix
from trainables.teachers import Teacher
from trainables.training.distiller import Distiller
from trainables.training.step import TrainingStep

LN3 = math.log(3)
#: Shannon entropies: H([1/2, 1/2]) = ln 2; H([3/4, 1/4]) = ln 4 - (3/4) ln 3; H([1, 0]) = 0.
H_HALF = math.log(2)
H_QUARTER = math.log(4) - 0.75 * LN3


# -- SAAD ----------------------------------------------------------------------------------


def test_entropy_weights_and_their_normalisation() -> None:
    teacher_adv = torch.tensor([[0.0, 0.0], [LN3, 0.0], [100.0, 0.0]])
    assert renyi_entropy(teacher_adv, 1.0) == pytest.approx(
        torch.tensor([H_HALF, H_QUARTER, 0.0]), abs=1e-6
    )
    # order 2: -ln(sum p^2): -ln(1/2) and -ln(9/16 + 1/16) = ln(8/5)
    assert renyi_entropy(teacher_adv[:2], 2.0) == pytest.approx(
        torch.tensor([math.log(2), math.log(8 / 5)]), abs=1e-6
    )
    # the Renyi entropy tends to Shannon's as the order tends to 1
    for gamma in (0.99, 1.01):
        assert renyi_entropy(teacher_adv, gamma) == pytest.approx(
            renyi_entropy(teacher_adv, 1.0), abs=5e-3
        )
    w, wbar = saad_weights("entropy", teacher_adv, scale=5.0)
    assert w == pytest.approx(torch.tensor([5 * H_HALF, 5 * H_QUARTER, 0.0]), abs=1e-5)
    assert wbar == pytest.approx(torch.tensor([1.0, H_QUARTER / H_HALF, 0.0]), abs=1e-6)


def test_transfer_and_margin_weights() -> None:
    clean = torch.tensor([[LN3, 0.0], [LN3, 0.0], [0.0, LN3]])
    adv = torch.tensor([[0.0, LN3], [0.0, 0.0], [0.0, LN3]])
    labels = torch.tensor([0, 0, 1])
    w, wbar = saad_weights("transfer", adv, teacher_clean_logits=clean, scale=2.0)
    assert w.tolist() == [2.0, 0.0, 0.0]  # only the first x_adv flips the teacher
    assert wbar.tolist() == [1.0, 0.0, 0.0]
    # probability margins: clean 1/2, 1/2, 1/2; adv -1/2, 0, 1/2 -> drops 1, 1/2, 0
    w, _ = saad_weights("margin", adv, teacher_clean_logits=clean, labels=labels, scale=2.0)
    assert w == pytest.approx(torch.tensor([2.0, 1.0, 0.0]), abs=1e-6)
    with pytest.raises(ValueError, match="clean logits"):
        saad_weights("transfer", adv)


def test_weights_carry_no_gradient_and_equal_weights_normalise_to_zero() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    w, wbar = saad_weights("entropy", logits)
    assert not w.requires_grad and not wbar.requires_grad
    assert minmax_normalise(torch.full((3,), 2.0)).tolist() == [0.0, 0.0, 0.0]


# -- distillation terms --------------------------------------------------------------------


TEACHER = torch.tensor([[1.0, 2.0]])
ADV = torch.tensor([[2.0, 2.0]])
LOWER, UPPER = torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 2.5]])


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (0.0, 0.5),  # adversarial features [2, 2]: ((2-1)^2 + 0) / 2
        # endpoints [1, 1.5] and [2.5, 2.25]: per coordinate max(0, 1.5^2), max(0.5^2, 0.25^2)
        (0.5, 1.25),
        (1.0, 2.5),  # worst case [3, 1]: (2^2 + 1^2) / 2
    ],
)
def test_feature_term_by_hand(alpha: float, expected: float) -> None:
    # coordinate 0: |0 - 1| < |3 - 1| -> upper 3; coordinate 1: |1 - 2| > |2.5 - 2| -> lower 1
    assert farther_endpoint(LOWER, UPPER, TEACHER).tolist() == [[3.0, 1.0]]
    adv = ADV if alpha < 1 else None
    bounds = (LOWER, UPPER) if alpha > 0 else None
    term = cc_feature_term(adv, bounds, TEACHER, alpha)
    assert term.item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("alpha", "expected"), [(0.0, 1.0), (0.2, 1.21), (0.5, 1.5625), (1.0, 9.0)]
)
def test_feature_term_mixes_first_then_takes_the_farther_endpoint(alpha, expected) -> None:
    # t = 0, adv = 1, [l, u] = [-3, 1.5]: endpoints (1 - a) + a (-3) and (1 - a) + 1.5 a.
    # Choosing the bound farther from t first (-3) and mixing after gives 1.00 / 0.04 / 1.00 /
    # 9.00: not monotone in alpha.
    t, adv, lower, upper = (torch.tensor([[v]]) for v in (0.0, 1.0, -3.0, 1.5))
    term = cc_feature_term(adv if alpha < 1 else None, (lower, upper), t, alpha)
    assert term.item() == pytest.approx(expected)


def _random_feature_case(seed: int, width: int = 7, batch: int = 5):
    """Random teacher features, bounds, and adversarial features inside the bounds."""
    generator = torch.Generator().manual_seed(seed)
    lower = torch.randn(batch, width, generator=generator)
    upper = lower + 2 * torch.rand(batch, width, generator=generator)
    adv = lower + torch.rand(batch, width, generator=generator) * (upper - lower)
    teacher = 2 * torch.randn(batch, width, generator=generator)
    return adv, lower, upper, teacher


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("projected", [False, True])
def test_feature_term_is_non_decreasing_in_alpha(seed: int, projected: bool) -> None:
    adv, lower, upper, teacher = _random_feature_case(seed)
    projection = None
    if projected:
        torch.manual_seed(seed)
        projection = nn.Linear(7, 4)
        teacher = teacher[:, :4]
    with torch.no_grad():
        values = torch.stack(
            [
                cc_feature_term(adv, (lower, upper), teacher, a, projection=projection)
                for a in torch.linspace(0, 1, 41).tolist()
            ]
        )
    assert (values[1:] >= values[:-1] - 1e-6).all(), values


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [0.01, 0.3, 1.0])
def test_feature_term_gradient_never_widens_the_bounds(seed: int, alpha: float) -> None:
    adv, lower, upper, teacher = _random_feature_case(seed)
    lower.requires_grad_(True)
    upper.requires_grad_(True)
    cc_feature_term(adv, (lower, upper), teacher, alpha).sum().backward()
    # a descent step moves lower by -grad and upper by -grad: lower must not fall, upper not rise
    assert (lower.grad <= 0).all() and (upper.grad >= 0).all()
    assert ((lower.grad != 0) | (upper.grad != 0)).all()  # one endpoint per coordinate moves


def test_feature_term_limits_are_the_adversarial_and_the_bound_only_forms() -> None:
    adv, lower, upper, teacher = _random_feature_case(7)
    at_zero = cc_feature_term(adv, (lower, upper), teacher, 0.0)
    assert torch.allclose(at_zero, feature_distance(adv, teacher, "l2"))
    assert torch.allclose(at_zero, cc_feature_term(adv, None, teacher, 0.0))
    at_one = cc_feature_term(adv, (lower, upper), teacher, 1.0)
    worst = torch.maximum((lower - teacher) ** 2, (upper - teacher) ** 2).mean(dim=1)
    assert torch.allclose(at_one, worst)
    assert torch.allclose(at_one, cc_feature_term(None, (lower, upper), teacher, 1.0))


def test_cosine_distance_by_hand() -> None:
    # cos([3, 1], [1, 2]) = 5 / sqrt(50)
    term = cc_feature_term(None, (LOWER, UPPER), TEACHER, 1.0, distance="cosine")
    assert term.item() == pytest.approx(1 - 5 / math.sqrt(50))
    assert feature_distance(TEACHER, 3 * TEACHER, "cosine").item() == pytest.approx(0, abs=1e-6)


def test_projection_maps_features_and_bounds_soundly() -> None:
    torch.manual_seed(0)
    projection = nn.Linear(6, 4)
    lower = torch.randn(5, 6)
    upper = lower + torch.rand(5, 6)
    low, high = linear_interval(projection, lower, upper)
    assert low.shape == high.shape == (5, 4)
    points = lower + torch.rand(200, 5, 6) * (upper - lower)
    mapped = projection(points)
    assert (mapped >= low - 1e-5).all() and (mapped <= high + 1e-5).all()
    term = cc_feature_term(
        torch.randn(5, 2, 3), (lower, upper), torch.randn(5, 4), 0.5, projection=projection
    )
    assert term.shape == (5,)


def test_kl_with_temperature_by_hand() -> None:
    teacher, student = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    # KL([1/2, 1/2] || [3/4, 1/4]) = (1/2) ln(2/3) + (1/2) ln 2 = (1/2) ln(4/3)
    assert kl_with_temperature(teacher, student, 1.0).item() == pytest.approx(0.5 * math.log(4 / 3))
    # T = 2: student softmax([ln 3 / 2, 0]) = [r, 1] / (r + 1) with r = sqrt 3; times T^2
    r = math.sqrt(3)
    q = (r / (r + 1), 1 / (r + 1))
    expected = 4 * (0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1]))
    assert kl_with_temperature(teacher, student, 2.0).item() == pytest.approx(expected)
    assert kl_with_temperature(student, student, 3.0).item() == pytest.approx(0, abs=1e-6)


def test_worst_case_logits_carry_the_ibp_loss() -> None:
    labels = torch.tensor([1, 0])
    lower = torch.tensor([[0.5, -1.0], [2.0, 3.0]])  # rows of margin_spec: j != y, in order
    logits = worst_case_logits(lower, labels, 3)
    assert logits.tolist() == [[-0.5, 0.0, 1.0], [0.0, -2.0, -3.0]]
    cross_entropy = nn.functional.cross_entropy(logits, labels, reduction="none")
    assert cross_entropy == pytest.approx(margin_cross_entropy(lower, reduction="none"))


# -- feature bounds from the step's bound propagation --------------------------------------


@pytest.mark.parametrize("name", ["relu1", "fc1", "penultimate", "logits"])
def test_feature_bounds_contain_the_features_and_leave_the_margins_unchanged(name) -> None:
    torch.manual_seed(1)
    model = build_model("cnn_small", (1, 8, 8), 10, linear_size=32).eval()
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 4, 9])
    lower, upper = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    C = margin_spec(y, 10)
    count = op_count(nn.Sequential(*feature_prefix(model, name)))
    ops, _ = linearize(model, x)
    assert op_count(model) == len(ops) and count <= len(ops)
    plain = margin_bounds(model, lower, upper, C, None)
    tapped = margin_bounds(model, lower, upper, C, None, feature_ops=count)
    assert torch.allclose(plain.ibp, tapped.ibp, atol=1e-5)
    assert len(plain.relu_inputs) == len(tapped.relu_inputs)
    (low, high), _ = propagate_intervals(ops[:count], lower, upper)
    assert torch.allclose(tapped.features[0], low, atol=1e-5)
    assert torch.allclose(tapped.features[1], high, atol=1e-5)
    prefix = nn.Sequential(*feature_prefix(model, name))
    points = lower + torch.rand(50, *x.shape) * (upper - lower)
    with torch.no_grad():
        inside = prefix(points.flatten(0, 1)).view(50, 3, -1)
    assert (inside >= tapped.features[0].flatten(1) - 1e-4).all()
    assert (inside <= tapped.features[1].flatten(1) + 1e-4).all()


# -- the distiller in a step ----------------------------------------------------------------


def _teacher(linear_size: int = 32) -> Teacher:
    torch.manual_seed(2)
    model = build_model("cnn_small", (1, 8, 8), 10, linear_size=linear_size)
    return Teacher("test", model.eval().requires_grad_(False), "memory")


def _step(overrides: dict, teacher: Teacher) -> tuple[TrainingStep, nn.Sequential]:
    config = load_config(
        {"teacher.name": "test", "method.name": "cc-ibp", "attack.steps": 2, **overrides}
    )
    torch.manual_seed(3)
    student = build_model("cnn_small", (1, 8, 8), 10, linear_size=16).train()
    distiller = Distiller(config, teacher, student, (1, 8, 8), 10)
    step = TrainingStep(student, student, config, 10, torch.Generator().manual_seed(0), distiller)
    return step, student


def test_projection_is_built_when_dimensions_differ_or_when_asked() -> None:
    teacher = _teacher(linear_size=32)
    step, _ = _step({}, teacher)
    assert tuple(step.distiller.projection.weight.shape) == (32, 16)
    same = _teacher(linear_size=16)
    assert _step({}, same)[0].distiller.projection is None
    assert _step({"distill.projection": True}, same)[0].distiller.projection is not None
    with pytest.raises(ConfigError, match=r"distill\.projection is false"):
        _step({"distill.projection": False}, teacher)
    assert _step({"distill.objective": "logit"}, teacher)[0].distiller.projection is None


def test_unknown_layer_is_a_clear_error_listing_the_names() -> None:
    with pytest.raises(ConfigError) as info:
        _step({"distill.layer": "conv9"}, _teacher())
    message = str(info.value)
    assert "distill.layer='conv9'" in message and "penultimate" in message and "relu1" in message
    with pytest.raises(ConfigError, match=r"distill\.teacher_layer='nope'"):
        _step({"distill.teacher_layer": "nope"}, _teacher())
    assert "fc1" in feature_names(_teacher().model)


@pytest.mark.parametrize(
    "overrides",
    [
        {"method.alpha": 0.0},
        {"method.alpha": 1.0, "distill.layer": "relu2", "distill.teacher_layer": "fc1"},
        {"distill.objective": "logit", "distill.inputs": "both", "distill.temperature": 4.0},
        {"distill.objective": "logit", "distill.inputs": "ibp"},
        {
            "saad.enabled": True,
            "saad.weighting": "margin",
            "saad.on_certified": True,
            "saad.clean_weight": 0.5,
        },
        {"method.name": "ibp", "saad.enabled": True, "distill.alpha": 1.0},
        {"method.name": "sabr", "distill.objective": "logit", "distill.inputs": "adv"},
    ],
)
def test_step_total_is_the_sum_of_its_terms_and_the_teacher_gets_no_gradient(overrides) -> None:
    teacher = _teacher()
    step, student = _step(overrides, teacher)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    out = step(x, y, eps=0.05)
    assert "distill" in out.terms
    assert ("distill_clean" in out.terms) == ("saad.clean_weight" in overrides)
    assert out.total.item() == pytest.approx(sum(t.item() for t in out.terms.values()), rel=1e-6)
    out.total.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    assert not teacher.model.training
    assert student.fc_out.weight.grad is not None
    if step.distiller.projection is not None:
        assert step.distiller.projection.weight.grad is not None
    assert teacher.take_seconds() > 0 and teacher.seconds == 0


def test_saad_weights_multiply_the_per_sample_distillation_term(monkeypatch) -> None:
    teacher = _teacher()
    step, _ = _step({"distill.objective": "logit", "distill.inputs": "clean"}, teacher)
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    plain = step(x, y, eps=0.05).terms["distill"]
    weighted_step, _ = _step(
        {"distill.objective": "logit", "distill.inputs": "clean", "saad.enabled": True}, teacher
    )
    weights = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
    import trainables.training.distiller as module

    monkeypatch.setattr(module, "saad_weights", lambda *a, **k: (weights, weights / 2))
    with torch.no_grad():
        logits = weighted_step.model(x)
    per_sample = kl_with_temperature(teacher(x)[0], logits, 1.0)
    assert plain.item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
    weighted = weighted_step(x, y, eps=0.05).terms["distill"]
    assert weighted.item() == pytest.approx((weights * per_sample).mean().item(), rel=1e-5)
