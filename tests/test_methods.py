"""The training step of each method against the reference formulas it implements.

Boxes (expressive-losses ``train.py``: the attack radius is eps_t x train_eps_factor x
attack_eps_factor), CROWN-IBP's bound mixing (auto_LiRPA: lb = f lb_CROWN-IBP +
(1 - f) lb_IBP, then one cross-entropy), the BatchNorm conventions and SAAD's inner attack,
IGDM term and certified-loss weights.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import trainables.methods.context as context_module
from trainables.attacks.classification import linf_box
from trainables.bounds.spec import margin_spec
from trainables.config import ConfigError, config_keys, load_config
from trainables.losses.certified import margin_cross_entropy
from trainables.losses.distillation import igdm_term
from trainables.losses.saad import linearised_logits, mean_one, teacher_kl_attack
from trainables.methods import METHODS, method_names
from trainables.methods.batchnorm import capture_statistics
from trainables.methods.context import margin_bounds
from trainables.models import build_model
from trainables.teachers import Teacher
from trainables.training.distiller import Distiller
from trainables.training.step import TrainingStep

LN3 = math.log(3)


def _student(seed: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model("cnn_small", (1, 8, 8), 10, linear_size=16).train()


def _bn_student() -> nn.Sequential:
    """A small CNN7: BatchNorm after every convolution and the first linear layer."""
    torch.manual_seed(4)
    return build_model("cnn7", (1, 8, 8), 10, width=4, linear_size=16).train()


def _teacher() -> Teacher:
    torch.manual_seed(2)
    model = build_model("cnn_small", (1, 8, 8), 10, linear_size=32)
    return Teacher("test", model.eval().requires_grad_(False), "memory")


def _step(settings: dict, model: nn.Sequential | None = None, teacher: Teacher | None = None):
    config = load_config({"attack.steps": 2, "warmup.weight": 0.0, **settings})
    model = _student() if model is None else model
    distiller = None
    if teacher is not None:
        distiller = Distiller(config, teacher, model, (1, 8, 8), 10)
    step = TrainingStep(model, model, config, 10, torch.Generator().manual_seed(0), distiller)
    return step, model


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.rand(n, 1, 8, 8, generator=generator), torch.randint(
        0, 10, (n,), generator=generator
    )


class _RecordingAttack:
    """Stands in for ``pgd_attack``: records the radius, returns a fixed point in the box."""

    def __init__(self) -> None:
        self.radii: list[float] = []

    def __call__(self, model, x, y, eps, **kwargs) -> torch.Tensor:
        self.radii.append(eps)
        lower, upper = linf_box(x, eps)
        return lower + 0.7 * (upper - lower)


# -- boxes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cc-ibp", "mtl-ibp", "exp-ibp", "sabr"])
def test_certified_attack_radius_composes_both_factors(monkeypatch, name: str) -> None:
    attack = _RecordingAttack()
    monkeypatch.setattr(context_module, "pgd_attack", attack)
    settings = {"method.name": name, "method.train_eps_factor": 1.5}
    step, _ = _step({**settings, "method.attack_eps_factor": 2.0})
    step(*_batch(), eps=0.04)
    assert attack.radii == [pytest.approx(0.04 * 1.5 * 2.0)]


def test_distillation_attack_for_ibp_composes_both_factors(monkeypatch) -> None:
    attack = _RecordingAttack()
    monkeypatch.setattr(context_module, "pgd_attack", attack)
    settings = {
        "method.name": "ibp",
        "method.train_eps_factor": 2.0,
        "method.attack_eps_factor": 1.5,
        "teacher.name": "test",
        "distill.objective": "logit",
        "distill.inputs": "adv",
    }
    step, _ = _step(settings, teacher=_teacher())
    step(*_batch(), eps=0.04)
    assert attack.radii == [pytest.approx(0.04 * 2.0 * 1.5)]


@pytest.mark.parametrize("name", ["pgd-at", "trades"])
def test_adversarial_methods_attack_at_eps_times_the_attack_factor(monkeypatch, name) -> None:
    attack = _RecordingAttack()
    monkeypatch.setattr(context_module, "pgd_attack", attack)
    step, _ = _step({"method.name": name, "method.attack_eps_factor": 1.5})
    step(*_batch(), eps=0.04)
    assert attack.radii == [pytest.approx(0.06)]


# -- CROWN-IBP ------------------------------------------------------------------------------


def _crown_ibp_bounds(model, x, y, eps):
    with capture_statistics(model) as statistics:
        model(x)
    lower, upper = linf_box(x, eps)
    return margin_bounds(model, lower, upper, margin_spec(y, 10), statistics, with_crown_ibp=True)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_crown_ibp_mixes_the_bounds_then_takes_one_cross_entropy(weight: float) -> None:
    x, y = _batch()
    settings = {
        "method.name": "crown-ibp",
        "method.crown_bound_weight_start": weight,
        "method.crown_bound_weight_end": weight,
    }
    step, model = _step(settings)
    out = step(x, y, eps=0.05)
    bounds = _crown_ibp_bounds(model, x, y, 0.05)
    mixed = weight * bounds.crown_ibp + (1 - weight) * bounds.ibp
    assert out.terms["robust"].item() == pytest.approx(margin_cross_entropy(mixed).item(), rel=1e-5)
    assert set(out.terms) == {"robust"}  # no clean-loss term by default (Shi, auto_LiRPA)
    if 0 < weight < 1:  # mixing the losses instead would give another number
        loss_mix = weight * margin_cross_entropy(bounds.crown_ibp) + (1 - weight) * (
            margin_cross_entropy(bounds.ibp)
        )
        assert out.terms["robust"].item() != pytest.approx(loss_mix.item(), rel=1e-4)


def test_crown_ibp_default_weight_follows_the_ramp_and_the_clean_loss_is_an_option() -> None:
    x, y = _batch()
    step, model = _step({"method.name": "crown-ibp", "eps": 0.1})
    out = step(x, y, eps=0.025)
    assert out.diagnostics["crown_bound_weight"] == pytest.approx(0.75)  # (0.1 - 0.025) / 0.1
    bounds = _crown_ibp_bounds(model, x, y, 0.025)
    mixed = 0.75 * bounds.crown_ibp + 0.25 * bounds.ibp
    assert out.terms["robust"].item() == pytest.approx(margin_cross_entropy(mixed).item(), rel=1e-5)
    settings = {
        "method.name": "crown-ibp",
        "eps": 0.1,
        "method.clean_loss_weight_start": 0.6,
        "method.clean_loss_weight_end": 0.2,
    }
    step, model = _step(settings)
    out = step(x, y, eps=0.05)  # kappa halfway: 0.4
    with torch.no_grad():
        clean = nn.functional.cross_entropy(model(x), y)
    assert out.diagnostics["clean_loss_weight"] == pytest.approx(0.4)
    assert out.terms["natural"].item() == pytest.approx(0.4 * clean.item(), rel=1e-5)
    bounds = _crown_ibp_bounds(model, x, y, 0.05)
    mixed = 0.5 * bounds.crown_ibp + 0.5 * bounds.ibp
    expected = 0.6 * margin_cross_entropy(mixed).item()
    assert out.terms["robust"].item() == pytest.approx(expected, rel=1e-5)


# -- BatchNorm conventions -----------------------------------------------------------------


@pytest.fixture
def bound_statistics(monkeypatch) -> dict:
    """Records the BatchNorm statistics the step's ``margin_bounds`` call receives."""
    seen = {}
    original = context_module.margin_bounds

    def recording(model, lower, upper, C, statistics, **kwargs):
        seen["statistics"] = statistics
        return original(model, lower, upper, C, statistics, **kwargs)

    monkeypatch.setattr(context_module, "margin_bounds", recording)
    return seen


@pytest.mark.parametrize(
    ("method", "convention", "source"),
    [
        ("cc-ibp", "clean", "clean"),
        ("cc-ibp", "adversarial", "adv"),
        ("sabr", "adversarial", "adv"),  # SABR makes the adversarial pass for the statistics
        ("ibp", "adversarial", "clean"),  # no attack: the clean batch's
    ],
)
def test_bounds_normalise_with_the_conventions_statistics(
    monkeypatch, bound_statistics, method, convention, source
):
    attack = _RecordingAttack()
    monkeypatch.setattr(context_module, "pgd_attack", attack)
    x, y = _batch()
    step, model = _step({"method.name": method, "bn_stats": convention}, _bn_student())
    step(x, y, eps=0.05)
    inputs = x if source == "clean" else attack(model, x, y, 0.05)
    with torch.no_grad(), capture_statistics(model) as expected:
        model(inputs)
    seen = bound_statistics["statistics"]
    assert len(expected) == 6 and seen.keys() == expected.keys()
    for bn, (mean, var) in expected.items():
        assert torch.allclose(seen[bn][0], mean, atol=1e-6)
        assert torch.allclose(seen[bn][1], var, atol=1e-6)


# -- SAAD -------------------------------------------------------------------------------------


def test_linearised_logits_are_exact_for_a_linear_teacher() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, delta, y = (
        torch.rand(5, 1, 2, 2),
        0.1 * torch.randn(5, 1, 2, 2),
        torch.tensor([0, 1, 2, 1, 0]),
    )
    probe = x.clone().requires_grad_(True)
    clean = teacher(probe)
    (slope,) = torch.autograd.grad(clean.gather(1, y[:, None]).sum(), probe)
    moved = linearised_logits(clean.detach(), slope, delta, y)
    with torch.no_grad():
        exact = teacher(x + delta)
    rows = torch.arange(5)
    assert torch.allclose(moved[rows, y], exact[rows, y], atol=1e-6)
    others = torch.ones_like(moved, dtype=torch.bool)
    others[rows, y] = False
    assert torch.equal(moved[others], clean.detach()[others])  # other classes stay clean


def test_teacher_kl_attack_starts_near_x_stays_in_the_box_and_raises_the_kl() -> None:
    student, teacher = _student(), _teacher().model
    x, y = _batch()
    start = teacher_kl_attack(
        student, teacher, x, y, 0.1, steps=0, generator=torch.Generator().manual_seed(1)
    )
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(start, x + 0.001 * noise)  # the reference's start, x + 0.001 N(0, 1)
    x_adv = teacher_kl_attack(
        student, teacher, x, y, 0.1, generator=torch.Generator().manual_seed(1)
    )
    lower, upper = linf_box(x, 0.1)
    assert (x_adv >= lower - 1e-7).all() and (x_adv <= upper + 1e-7).all()
    assert student.training  # the attack restores the mode

    def objective(point: torch.Tensor) -> float:
        probe = x.clone().requires_grad_(True)
        clean = teacher(probe)
        (slope,) = torch.autograd.grad(clean.gather(1, y[:, None]).sum(), probe)
        target = linearised_logits(clean.detach(), slope, point - x, y)
        with torch.no_grad():
            student.eval()
            log_q = torch.log_softmax(student(point), dim=1)
            student.train()
        return nn.functional.kl_div(log_q, torch.softmax(target, 1), reduction="sum").item()

    assert objective(x_adv) > objective(start)


def test_igdm_term_by_hand() -> None:
    # teacher difference [0, 0] -> [1/2, 1/2]; student difference [ln 3, 0] -> [3/4, 1/4]
    teacher_plus, teacher_minus = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]])
    student_plus, student_minus = torch.tensor([[LN3 + 1, 5.0]]), torch.tensor([[1.0, 5.0]])
    value = igdm_term(teacher_plus, teacher_minus, student_plus, student_minus)
    assert value.item() == pytest.approx(0.5 * math.log(4 / 3))


def test_mean_one_weights() -> None:
    assert mean_one(torch.tensor([0.0, 1.0, 2.0])).tolist() == pytest.approx([0.0, 1.0, 2.0])
    assert mean_one(torch.tensor([1.0, 3.0])).tolist() == pytest.approx([0.5, 1.5])
    assert mean_one(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]


def test_saad_on_certified_weights_the_certified_loss_with_mean_one_weights(monkeypatch) -> None:
    import trainables.training.distiller as distillation

    weights = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 4.0])
    monkeypatch.setattr(distillation, "saad_weights", lambda *a, **k: (weights, weights / 4))
    settings = {
        "method.name": "ibp",
        "teacher.name": "test",
        "distill.objective": "logit",
        "saad.enabled": True,
        "saad.on_certified": True,
    }
    x, y = _batch()
    step, model = _step(settings, teacher=_teacher())
    out = step(x, y, eps=0.05)
    with capture_statistics(model) as statistics:
        model(x)
    lower, upper = linf_box(x, 0.05)
    bounds = margin_bounds(model, lower, upper, margin_spec(y, 10), statistics)
    per_sample = margin_cross_entropy(bounds.ibp, reduction="none")
    expected = (weights / weights.mean() * per_sample).mean()
    assert out.terms["robust"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("attack", ["step", "teacher_kl"])
def test_saad_igdm_and_own_attack_in_a_step(monkeypatch, attack: str) -> None:
    import trainables.training.distiller as distillation

    calls = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return teacher_kl_attack(*args, **kwargs)

    monkeypatch.setattr(distillation, "teacher_kl_attack", recording)
    settings = {
        "method.name": "cc-ibp",
        "teacher.name": "test",
        "distill.objective": "logit",
        "distill.inputs": "adv",
        "saad.enabled": True,
        "saad.attack": attack,
        "saad.attack_steps": 3,
        "saad.igdm_weight": 2.0,
    }
    teacher, x, y = _teacher(), *_batch()
    terms = {}
    for progress in (0.5, 1.0):  # two identical fresh steps (same seeds) at two epochs
        step, student = _step(settings, teacher=teacher)
        out = step(x, y, eps=0.05, progress=progress)
        terms[progress] = out.terms
    assert [call["steps"] for call in calls] == ([3, 3] if attack == "teacher_kl" else [])
    assert out.total.item() == pytest.approx(sum(t.item() for t in out.terms.values()), rel=1e-6)
    igdm = terms[1.0]["distill_igdm"].item()
    assert igdm > 0  # IGDM's weight ramps with epoch / epochs
    assert terms[0.5]["distill_igdm"].item() == pytest.approx(igdm / 2, rel=1e-5)
    out.total.backward()
    assert student.fc_out.weight.grad is not None
    assert all(p.grad is None for p in teacher.model.parameters())


# -- the registry and the config's method union -----------------------------------------------


def test_registry_names_families_and_settings() -> None:
    assert method_names() == tuple(METHODS)
    assert all(METHODS[name].model_fields["name"].default == name for name in METHODS)
    assert method_names("certified") == ("ibp", "crown-ibp", "cc-ibp", "mtl-ibp", "exp-ibp", "sabr")
    assert method_names("adversarial") == ("pgd-at", "trades")
    assert set(method_names()) >= {"standard", "gaussian", "hinge", "hkr"}
    keys = config_keys()
    for name, cls in METHODS.items():
        assert {f"method.{field}" for field in cls.model_fields} <= keys, name


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"method.name": "sabr", "method.sabr_lambda": 0.2}, ("sabr", "sabr_lambda", 0.2)),
        ({"method.name": "trades", "method.trades_beta": 3.0}, ("trades", "trades_beta", 3.0)),
        ({"method": {"alpha": 0.3}}, ("cc-ibp", "alpha", 0.3)),  # no name: the default method
        ({"method.name": "hkr", "method.min_margin": 2.0}, ("hkr", "min_margin", 2.0)),
    ],
)
def test_dotted_and_nested_method_settings_validate(settings, expected) -> None:
    config = load_config(settings)
    name, key, value = expected
    assert config.method.name == name and getattr(config.method, key) == value
    assert load_config(config.flat()) == config  # the flat form round-trips


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"method.name": "ibp", "method.alpha": 0.3}, "method.alpha: unknown key"),
        ({"method.name": "cc-ibp", "method.sabr_lambda": 0.3}, "method.sabr_lambda: unknown key"),
        (
            {"method.name": "pgd-at", "method.train_eps_factor": 2},
            "method.train_eps_factor: unknown",
        ),
        ({"method.name": "nope"}, "method.name: unknown 'nope'; expected one of: standard, ibp"),
        ({"method.name": "sabr", "method.sabr_lambd": 0.2}, "(did you mean method.sabr_lambda?)"),
        ({"method.name": "sabr", "method.sabr_lambda": 2.0}, "method.sabr_lambda: Input should be"),
    ],
)
def test_a_setting_of_another_method_or_an_unknown_name_is_an_error_naming_it(
    settings, named
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(settings)
    assert named in str(info.value)


def test_feature_alpha_follows_the_method_or_the_distill_setting() -> None:
    student, teacher = _student(), _teacher()
    settings = {"teacher.name": "test"}
    for extra, alpha in [
        ({"method.name": "cc-ibp", "method.alpha": 0.2}, 0.2),
        ({"method.name": "ibp"}, 0.5),  # methods without alpha: DEFAULT_FEATURE_ALPHA
        ({"method.name": "ibp", "distill.alpha": 0.9}, 0.9),
        ({"method.name": "mtl-ibp", "method.alpha": 0.2, "distill.alpha": 0.0}, 0.0),
    ]:
        config = load_config({**settings, **extra})
        assert Distiller(config, teacher, student, (1, 8, 8), 10).alpha == alpha


def test_the_methods_package_does_not_import_the_config_or_the_training_loop() -> None:
    above = ("trainables.config", "trainables.training")
    code = (
        "import sys, trainables.methods;"
        f"bad = [m for m in sys.modules if m.startswith({above!r})];"
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_pre_registry_checkpoint_config_still_loads() -> None:
    """Checkpoints written before the registry dump every field of the old flat group."""
    legacy = {
        "name": "sabr",
        "alpha": 0.5,
        "sabr_lambda": 0.3,
        "kappa_start": 0.0,
        "kappa_end": 1.0,
        "trades_beta": 6.0,
        "train_eps_factor": 1.5,
        "attack_eps_factor": 1.0,
        "l1": 0.0,
        "sigma": 0.25,
        "min_margin": 1.0,
        "hkr_alpha": 0.98,
    }
    config = load_config({"method": legacy, "epochs": 5})
    assert config.method.name == "sabr" and config.method.sabr_lambda == 0.3
    assert config.method.train_eps_factor == 1.5
    with pytest.raises(ConfigError, match=r"method\.kappa_start: unknown key"):
        load_config({"method": {"name": "crown-ibp", "kappa_start": 0.2}})  # not a dump
