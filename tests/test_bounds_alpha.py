"""alpha-CROWN's own guarantees, and every linear-relaxation bound against IBP.

Soundness against samples, PGD and MILP minima is tested with the other methods
(test_bounds_soundness.py, test_bounds_exact.py iterate over ``METHODS``); here: never
looser than CROWN (nor IBP), a hand-computed case, its options, and no side effects.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from random_networks import FAMILIES, random_box, random_network
from torch import nn

from trainables.bounds import METHODS, compute_bounds, margin_spec
from trainables.certify.milp import exact_spec_minima

SHAPES = {"mlp": (1, 4, 4), "mlp_bn": (2, 3, 3)}


def _case(family: str, seed: int, batch: int = 3):
    shape = SHAPES.get(family, (1, 6, 6))
    model = random_network(family, seed, shape)
    x, lower, upper = random_box(seed, batch=batch, shape=shape)
    return model, lower, upper, margin_spec(model(x).argmax(1), 4, dtype=torch.float64)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_alpha_crown_is_never_looser_than_crown_and_often_tighter(family):
    gains = []
    for seed in range(2):
        model, lower, upper, C = _case(family, seed)
        with torch.no_grad():
            crown = compute_bounds(model, lower, upper, "crown", C)
            alpha = compute_bounds(model, lower, upper, "alpha-crown", C)
            fixed = compute_bounds(model, lower, upper, "alpha-crown", C, alpha_intermediate=False)
        for bounds in (alpha, fixed):
            assert (bounds[0] >= crown[0]).all() and (bounds[1] <= crown[1]).all()
        gains.append(float((alpha[0] - crown[0]).mean()))
    assert max(gains) > 0, f"{family}: alpha-CROWN never improved on CROWN"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_linear_relaxation_bound_is_at_least_ibp(family):
    for seed in range(2):
        model, lower, upper, C = _case(family, seed)
        with torch.no_grad():
            ibp = compute_bounds(model, lower, upper, "ibp", C)
            for method in METHODS[1:]:
                lb, ub = compute_bounds(model, lower, upper, method, C)
                assert (lb >= ibp[0]).all() and (ub <= ibp[1]).all(), (family, method)


def test_alpha_crown_finds_the_optimal_slope_of_a_hand_computed_case():
    """y = relu(x1 + x2 + 0.1) + (0.5 x1 - 0.5 x2) over [-1, 1]^2 (the second term through an
    always-active ReLU). With lower slope a on the first ReLU the bound is
    min a (x1 + x2 + 0.1) + 0.5 x1 - 0.5 x2 = -|a + 0.5| - |a - 0.5| + 0.1 a: CROWN's adaptive
    a = 1 (u = 2.1 > -l = 1.9) gives -1.9, IBP gives -1, the optimum a = 0.5 gives -0.95,
    which is the exact minimum (x = (-1, 0.9))."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0], [0.5, -0.5]]))
        model[0].bias.copy_(torch.tensor([0.1, 3.0]))
        model[2].weight.fill_(1.0)
        model[2].bias.fill_(-3.0)
    lower = -torch.ones(1, 2, dtype=torch.float64)
    with torch.no_grad():
        crown_lb, _ = compute_bounds(model, lower, -lower, "crown")
        alpha_lb, _ = compute_bounds(model, lower, -lower, "alpha-crown")
        exact, _ = exact_spec_minima(model, lower, -lower, torch.ones(1, 1, 1, dtype=torch.float64))
    assert crown_lb.item() == pytest.approx(-1.0)  # CROWN's -1.9, intersected with IBP's -1
    assert alpha_lb.item() == pytest.approx(-0.95, abs=1e-6)  # Adam: a step of ~lr
    assert exact[0, 0] == pytest.approx(-0.95, abs=1e-7)


def test_alpha_crown_meets_the_exact_minimum_more_often_than_crown():
    """On the MILP-sized MLPs alpha-CROWN closes part of CROWN's gap to the exact minimum."""
    gaps = {"crown": [], "alpha-crown": []}
    for seed in range(4):
        model = random_network("mlp", seed, (1, 3, 3))
        x, lower, upper = random_box(seed, batch=2, shape=(1, 3, 3))
        C = margin_spec(model(x).argmax(1), 4, dtype=torch.float64)
        minima, _ = exact_spec_minima(model, lower, upper, C, time_limit=60)
        for method in gaps:
            with torch.no_grad():
                lb, _ = compute_bounds(model, lower, upper, method, C)
            assert (minima >= lb.numpy() - 1e-7).all()
            gaps[method].append(float(np.mean(minima - lb.numpy())))
    assert np.mean(gaps["alpha-crown"]) < 0.8 * np.mean(gaps["crown"])


def test_alpha_crown_leaves_no_gradient_and_no_side_effects():
    model, lower, upper, C = _case("cnn_bn_pool", 0)
    model.float()
    lower, upper, C = lower.float(), upper.float(), C.float()
    lb, ub = compute_bounds(model, lower, upper, "alpha-crown", C)
    assert not lb.requires_grad and not ub.requires_grad
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():  # works inside no_grad (certify's context) as well
        lb2, _ = compute_bounds(model, lower, upper, "alpha-crown", C)
    torch.testing.assert_close(lb, lb2)


def test_more_iterations_never_loosen_and_one_iteration_is_crown():
    """The best bound is kept, so a longer run (the same trajectory, continued) is never
    looser; one iteration evaluates CROWN's own slopes."""
    model, lower, upper, C = _case("mlp", 1)
    with torch.no_grad():
        crown, _ = compute_bounds(model, lower, upper, "crown", C)
        one, _ = compute_bounds(model, lower, upper, "alpha-crown", C, alpha_iterations=1)
        default, _ = compute_bounds(model, lower, upper, "alpha-crown", C)
        many, _ = compute_bounds(model, lower, upper, "alpha-crown", C, alpha_iterations=40)
    torch.testing.assert_close(one, crown)
    assert (many >= default).all() and (default >= crown).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha_iterations": 0}, "iterations must be an integer >= 1"),
        ({"alpha_iterations": 2.5}, "iterations must be an integer >= 1"),
        ({"alpha_lr": 0.0}, "lr must be > 0"),
    ],
)
def test_alpha_crown_options_are_checked(options, message):
    model, lower, upper, C = _case("mlp", 0)
    with pytest.raises(ValueError, match=message):
        compute_bounds(model, lower, upper, "alpha-crown", C, **options)
