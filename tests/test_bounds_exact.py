"""Bounds against exact answers: MILP minima on small MLPs and tiny CNNs, closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from random_networks import random_box, random_network
from torch import nn

from trainables.attacks import pgd_minimize
from trainables.bounds import METHODS, UnsupportedLayerError, compute_bounds, margin_spec
from trainables.certify.milp import DenseReLUNetwork, exact_spec_minima

# (family, input shape, seed, max eps): sizes keep each MILP well under a second.
EXACT_CASES = (
    [("mlp", (1, 3, 3), seed, 0.22) for seed in range(8)]
    + [("cnn", (1, 3, 3), seed, 0.1) for seed in range(4)]
    + [("cnn_bn_pool", (1, 4, 4), seed, 0.22) for seed in range(4)]
    + [("mlp_bn", (1, 2, 3), seed, 0.22) for seed in range(2)]
)


def _exact_case(family, shape, seed, max_eps):
    model = random_network(family, seed, shape)
    x, lower, upper = random_box(seed, batch=2, shape=shape, max_eps=max_eps)
    C = margin_spec(model(x).argmax(1), 4, dtype=torch.float64)
    minima, results = exact_spec_minima(model, lower, upper, C, time_limit=60)
    assert all(r.status == "optimal" for sample in results for r in sample)
    return model, lower, upper, C, minima, results


@pytest.fixture(scope="module")
def exact_cases():
    return {case: _exact_case(*case) for case in EXACT_CASES}


@pytest.mark.parametrize("case", EXACT_CASES, ids=lambda c: f"{c[0]}-{c[2]}")
def test_exact_minimum_is_never_below_a_lower_bound(exact_cases, case):
    model, lower, upper, C, minima, _ = exact_cases[case]
    for method in METHODS:
        with torch.no_grad():
            lb, _ = compute_bounds(model, lower, upper, method, C)
        assert (minima >= lb.numpy() - 1e-7).all(), f"{method} lower bound above the exact minimum"


@pytest.mark.parametrize("case", EXACT_CASES[:6], ids=lambda c: f"{c[0]}-{c[2]}")
def test_milp_minimiser_is_real_and_nothing_beats_it(exact_cases, case):
    """The MILP itself: its argmin is in the box and attains the value; sampling and PGD
    never find anything lower (otherwise the reference would be wrong)."""
    model, lower, upper, C, minima, results = exact_cases[case]
    for b, sample in enumerate(results):
        for s, result in enumerate(sample):
            point = torch.from_numpy(result.x).unsqueeze(0)
            assert (point >= lower[b] - 1e-9).all() and (point <= upper[b] + 1e-9).all()
            value = (C[b, s] @ model(point)[0]).item()
            assert value == pytest.approx(result.value, abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    t = torch.rand(2000, *lower.shape, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        sampled = torch.stack(
            [torch.einsum("bso,bo->bs", C, model(lower + ti * (upper - lower))) for ti in t]
        )
    assert (sampled.min(dim=0).values.numpy() >= minima - 1e-6).all()
    for s in range(C.shape[1]):
        _, attacked = pgd_minimize(
            lambda z, r=s: torch.einsum("bo,bo->b", C[:, r], model(z)), lower, upper, steps=40
        )
        assert (attacked.detach().numpy() >= minima[:, s] - 1e-6).all()


def test_milp_matches_a_dense_grid_on_a_one_dimensional_network():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
    )
    model = model.double().eval()
    lower, upper = (
        torch.tensor([[-1.0]], dtype=torch.float64),
        torch.tensor([[2.0]], dtype=torch.float64),
    )
    C = torch.ones(1, 1, 1, dtype=torch.float64)
    minima, _ = exact_spec_minima(model, lower, upper, C)
    grid = torch.linspace(-1.0, 2.0, 300_001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        brute = model(grid).min().item()
    assert minima[0, 0] == pytest.approx(brute, abs=1e-6)


def test_crown_is_tighter_than_ibp_on_average(exact_cases):
    """A sanity check, not a guarantee: over all cases CROWN's gap to the exact minimum is
    smaller than IBP's. Prints the ratio (run pytest -s to see it)."""
    gaps = {method: [] for method in METHODS}
    for model, lower, upper, C, minima, _ in exact_cases.values():
        for method in METHODS:
            with torch.no_grad():
                lb, _ = compute_bounds(model, lower, upper, method, C)
            gaps[method].append(np.mean(minima - lb.numpy()))
    mean_gap = {method: float(np.mean(values)) for method, values in gaps.items()}
    print(
        f"\nmean gap to the exact minimum: {mean_gap}; "
        f"CROWN/IBP gap ratio {mean_gap['crown'] / mean_gap['ibp']:.3f}"
    )
    assert mean_gap["crown"] < mean_gap["ibp"]
    assert mean_gap["crown-ibp"] < mean_gap["ibp"]


def test_affine_networks_are_bounded_exactly_by_crown():
    """Without ReLUs the linear relaxation is exact: min of M x + b is M c - |M| r."""
    torch.manual_seed(2)
    model = (
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(12, 5),
        )
        .double()
        .eval()
    )
    _, lower, upper = random_box(2, batch=3, shape=(2, 4, 4))
    dense = DenseReLUNetwork.from_sequential(model, (2, 4, 4))
    (weight,), (bias,) = dense.weights, dense.biases
    centre = ((lower + upper) / 2).flatten(1).numpy()
    radius = ((upper - lower) / 2).flatten(1).numpy()
    exact_low = centre @ weight.T + bias - radius @ np.abs(weight).T
    exact_high = centre @ weight.T + bias + radius @ np.abs(weight).T
    for method in ("crown-ibp", "crown"):
        lb, ub = compute_bounds(model, lower, upper, method)
        np.testing.assert_allclose(lb.detach().numpy(), exact_low, atol=1e-10)
        np.testing.assert_allclose(ub.detach().numpy(), exact_high, atol=1e-10)
    ibp_lb, _ = compute_bounds(model, lower, upper, "ibp")
    assert (ibp_lb.detach().numpy() <= exact_low + 1e-10).all()
    assert (ibp_lb.detach().numpy() < exact_low - 1e-6).any(), "IBP through 2 dense maps is loose"


def test_spec_folding_is_tighter_than_subtracting_output_bounds():
    model = random_network("mlp", 4, (1, 3, 3))
    x, lower, upper = random_box(4, batch=6, shape=(1, 3, 3))
    C = margin_spec(model(x).argmax(1), 4, dtype=torch.float64)
    folded_lb, _ = compute_bounds(model, lower, upper, "ibp", C)
    low, high = compute_bounds(model, lower, upper, "ibp")
    naive_lb = torch.einsum("bso,bo->bs", C.clamp(min=0), low) + torch.einsum(
        "bso,bo->bs", C.clamp(max=0), high
    )
    assert (folded_lb >= naive_lb - 1e-12).all()
    assert (folded_lb > naive_lb + 1e-9).any()


def test_milp_encoding_refuses_non_affine_layers() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).eval()
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        DenseReLUNetwork.from_sequential(model, (2,))
