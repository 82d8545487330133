"""eps schedule, mixing weights, LR schedule and Shi et al.'s init at hand-computed points."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.config import OptimConfig
from trainables.models import build_model
from trainables.models.init import ibp_init_std, shi_ibp_init
from trainables.schedules import EpsSchedule, along_ramp, warmup_weight
from trainables.training.optim import build_lr_scheduler, build_optimizer

# E = 10 batches per epoch, ramp from epoch 2 for 4 epochs: init 10, mid 20, final 50;
# a = 1 / (30 * 4 * 10**3 + 10**4) = 1 / 130000 for eps_max = 1.
SMOOTH = EpsSchedule(eps_max=1.0, batches_per_epoch=10, start=2, length=4)


def test_smoothed_schedule_landmarks() -> None:
    assert (SMOOTH.init, SMOOTH.mid, SMOOTH.final) == (10, 20, 50)


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0, 0.0),
        (10, 0.0),
        (15, 5**4 / 130000),
        (20, 10**4 / 130000),
        (35, 10**4 / 130000 + (1 - 10**4 / 130000) * 15 / 30),
        (50, 1.0),
        (1000, 1.0),
    ],
)
def test_smoothed_schedule_values(t: int, expected: float) -> None:
    assert SMOOTH(t) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_smoothed_schedule_slope_is_continuous_at_mid() -> None:
    a = 1 / 130000
    left = 4 * a * 10**3  # derivative of a (t - init)^4 at mid
    right = (1 - a * 10**4) / 30  # slope of the linear part
    assert left == pytest.approx(right, rel=1e-12)
    assert SMOOTH(21) - SMOOTH(20) == pytest.approx(right, rel=1e-12)


def test_smoothed_schedule_is_monotone_and_scaled() -> None:
    values = [SMOOTH(t) for t in range(60)]
    assert values == sorted(values)
    scaled = EpsSchedule(eps_max=0.3, batches_per_epoch=10, start=2, length=4)
    assert scaled(30) == pytest.approx(0.3 * SMOOTH(30))


def test_linear_and_constant_schedules() -> None:
    linear = EpsSchedule(1.0, 10, start=2, length=4, kind="linear")
    assert [linear(t) for t in (5, 10, 30, 50, 70)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    constant = EpsSchedule(0.2, 10, start=3, length=4, kind="constant")
    assert constant(0) == constant(100) == 0.2


def test_one_batch_ramps_do_not_divide_by_zero() -> None:
    tiny = EpsSchedule(1.0, batches_per_epoch=1, start=1, length=1)
    assert [tiny(t) for t in range(3)] == [0.0, 1.0, 1.0]


def test_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batches_per_epoch"):
        EpsSchedule(1.0, batches_per_epoch=0)


def test_warmup_weight_and_along_ramp() -> None:
    assert warmup_weight(0.5, 0.0, 0.1) == 0.5
    assert warmup_weight(0.5, 0.025, 0.1) == pytest.approx(0.375)
    assert warmup_weight(0.5, 0.1, 0.1) == 0.0
    assert along_ramp(0.0, 1.0, 0.025, 0.1) == pytest.approx(0.25)
    assert along_ramp(1.0, 0.5, 0.1, 0.1) == pytest.approx(0.5)
    assert along_ramp(0.2, 1.0, 0.0, 0.0) == 1.0  # eps_max = 0: the schedule is over
    # CROWN-IBP's default bound weight: (eps_max - eps) / eps_max (auto_LiRPA)
    assert along_ramp(1.0, 0.0, 0.03, 0.1) == pytest.approx(0.7)


def test_lr_milestones_as_fractions_and_epochs() -> None:
    model = nn.Linear(2, 2)
    for milestones in ([0.5, 0.75], [5, 8]):
        config = OptimConfig(lr=1.0, milestones=milestones, decay=0.1)
        optimizer = build_optimizer(model.parameters(), config)
        scheduler = build_lr_scheduler(optimizer, config, epochs=10)
        lrs = []
        for _ in range(10):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        # both forms put the drops after epochs 5 and 8
        assert lrs[4] == 1.0
        assert lrs[5] == pytest.approx(0.1)
        assert lrs[8] == pytest.approx(0.01)


def test_cosine_and_optimiser_choice() -> None:
    model = nn.Linear(2, 2)
    config = OptimConfig(name="sgd", lr=1.0, schedule="cosine", momentum=0.5)
    optimizer = build_optimizer(model.parameters(), config)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.5
    scheduler = build_lr_scheduler(optimizer, config, epochs=4)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    adamw = build_optimizer(model.parameters(), OptimConfig(name="adamw", weight_decay=0.1))
    assert isinstance(adamw, torch.optim.AdamW)


def test_shi_init_draws_every_weight_but_the_last_from_the_formula() -> None:
    torch.manual_seed(0)
    model = build_model("cnn7", (3, 16, 16), 10, width=16, linear_size=256)
    last_before = model.fc_out.weight.clone()
    shi_ibp_init(model)
    assert torch.equal(model.fc_out.weight, last_before)
    assert ibp_init_std(100) == pytest.approx(math.sqrt(2 * math.pi) / 100)
    for name in ("conv2", "conv4", "fc1"):
        weight = getattr(model, name).weight
        expected = math.sqrt(2 * math.pi) / weight[0].numel()
        assert weight.std().item() == pytest.approx(expected, rel=0.05), name
        assert abs(weight.mean().item()) < 0.1 * expected
