"""Complete verification (verify_exact) against brute force, constructions, attacks and Marabou."""

from __future__ import annotations

import itertools
import math
import sys

import numpy as np
import pytest
import torch
from random_networks import random_network
from torch import nn

from trainables.attacks import linf_box, pgd_attack, true_class_margin
from trainables.bounds import BackendUnavailableError, UnsupportedLayerError
from trainables.certify.bab import verify_bab
from trainables.certify.exact import verify_exact
from trainables.models.layers import Normalize

try:
    import maraboupy  # noqa: F401

    HAVE_MARABOU = True
except ImportError:
    HAVE_MARABOU = False
needs_marabou = pytest.mark.skipif(
    not HAVE_MARABOU, reason="maraboupy cannot be imported (pip install maraboupy==2.0.0)"
)
BACKENDS = ["milp", pytest.param("marabou", marks=needs_marabou)]
# The fast path's attack is kept short: the complete search, not PGD, is under test.
FAST = {"pgd_steps": 20, "pgd_restarts": 2}


def _mlp(seed: int, widths: tuple[int, ...] = (4, 8, 8, 3)) -> nn.Sequential:
    """He-scaled random MLP: more logit variation than PyTorch's default init, so that small
    boxes already give a mix of verified and falsified samples."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        linear = nn.Linear(fan_in, fan_out).double()
        with torch.no_grad():
            weight = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64)
            linear.weight.copy_(weight * math.sqrt(2 / fan_in))
            linear.bias.copy_(0.1 * torch.randn(fan_out, generator=generator, dtype=torch.float64))
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def _inputs(model: nn.Module, seed: int, batch: int, shape: tuple[int, ...]):
    """Uniform inputs in [0, 1] labelled with the model's own prediction."""
    generator = torch.Generator().manual_seed(1000 + seed)
    dtype = next(model.parameters()).dtype
    x = torch.rand(batch, *shape, generator=generator, dtype=torch.float64).to(dtype)
    with torch.no_grad():
        return x, model(x).argmax(1)


def _statuses(verdicts) -> list[str]:
    return [verdict.status for verdict in verdicts]


def _lipschitz(model: nn.Sequential, label: int) -> float:
    """An L-inf Lipschitz constant of every margin ``z_label - z_j`` of a Linear/ReLU MLP."""
    weights = [layer.weight.detach().abs() for layer in model if isinstance(layer, nn.Linear)]
    chain = weights[-1]
    for weight in reversed(weights[:-1]):
        chain = chain @ weight
    row_sums = chain.sum(dim=1)
    return float((row_sums[label] + row_sums).max())


def _brute_force_truth(model: nn.Sequential, lower, upper, label: int, points: int = 201):
    """The exact verdict from a dense grid (corners included) on a 2-D box, or None.

    "falsified" if a grid point is clearly misclassified; "verified" if the smallest grid
    margin exceeds the most the margin can drop between a point and its nearest grid node
    (Lipschitz constant times half the spacing); None when the grid cannot tell.
    """
    axes = [
        torch.linspace(float(lo), float(hi), points, dtype=torch.float64)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    grid = torch.cartesian_prod(*axes)
    with torch.no_grad():
        margins = true_class_margin(model(grid), torch.full((len(grid),), label))
    if margins.min() < -1e-4:
        return "falsified"
    spacing = float((upper - lower).max()) / (points - 1)
    if margins.min() - _lipschitz(model, label) * spacing / 2 > 1e-4:
        return "verified"
    return None


def test_agrees_with_brute_force_on_two_dimensional_networks():
    truths, decided = [], 0
    for seed in range(4):
        model = _mlp(seed, (2, 16, 16, 3))
        x, y = _inputs(model, seed, 8, (2,))
        lower, upper = linf_box(x, 0.15)
        plain = verify_exact(model, x, y, 0.15, fast_path=False)
        fast = verify_exact(model, x, y, 0.15, **FAST)
        for b in range(len(x)):
            truth = _brute_force_truth(model, lower[b], upper[b], int(y[b]))
            truths.append(truth)
            if truth is not None:
                decided += 1
                assert plain[b].status == truth, (seed, b)
                assert fast[b].status == truth, (seed, b)
    assert decided >= 0.75 * len(truths), "the grid should decide most samples"
    assert {"verified", "falsified"} <= set(truths), "both answers must occur to test anything"


def _abs_difference_network(threshold: float) -> nn.Sequential:
    """z_0 = |x_1 - x_2| (two ReLUs), z_1 = threshold."""
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        first.bias.zero_()
        second.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        second.bias.copy_(torch.tensor([0.0, threshold]))
    return nn.Sequential(first, nn.ReLU(), second).double().eval()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fast_path", [False, True])
def test_known_answer_by_construction(backend, fast_path):
    """Class 0 is robust iff min |x_1 - x_2| over the box exceeds t; class 1 iff max is below t.

    Both labels at every point, so clean-misclassified samples are included.
    """
    threshold = 0.3
    model = _abs_difference_network(threshold)
    values = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    points = torch.cartesian_prod(values, values)
    x = torch.cat([points, points])
    y = torch.cat([torch.zeros(len(points)), torch.ones(len(points))]).long()
    for eps in (0.05, 0.2):
        lower, upper = linf_box(x, eps)
        gap_low = torch.stack(
            [lower[:, 0] - upper[:, 1], lower[:, 1] - upper[:, 0], torch.zeros(len(x))]
        ).amax(0)
        gap_high = torch.stack([upper[:, 0] - lower[:, 1], upper[:, 1] - lower[:, 0]]).amax(0)
        exact_margin = torch.where(y == 0, gap_low - threshold, threshold - gap_high)
        verdicts = verify_exact(model, x, y, eps, backend=backend, fast_path=fast_path, **FAST)
        clear = exact_margin.abs() > 1e-3
        expected = ["verified" if m > 0 else "falsified" for m in exact_margin]
        got = _statuses(verdicts)
        assert [g for g, c in zip(got, clear, strict=True) if c] == [
            e for e, c in zip(expected, clear, strict=True) if c
        ]
        assert {"verified", "falsified"} <= set(expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fast_path", [False, True])
def test_ties_are_not_robust(backend, fast_path):
    """Equal logits everywhere: every point is a tie, so every sample is falsified."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.fill_(0.5)
    x = torch.tensor([[0.2, 0.7], [0.9, 0.1]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    verdicts = verify_exact(model, x, y, 0.1, backend=backend, fast_path=fast_path, **FAST)
    assert _statuses(verdicts) == ["falsified", "falsified"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tie_at_the_minimum_is_never_verified(backend):
    """min |x_1 - x_2| = 0 exactly (the boxes meet the diagonal): a tie, not robust; rounding
    may leave the solver's point a hair off the diagonal, so "unknown" is acceptable."""
    model = _abs_difference_network(0.0)
    x = torch.tensor([[0.5, 0.4], [0.3, 0.6], [0.8, 0.75]], dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    verdicts = verify_exact(model, x, y, 0.15, backend=backend, fast_path=False)
    assert set(_statuses(verdicts)) <= {"falsified", "unknown"}


def test_never_verified_where_a_counterexample_exists():
    """An independent search (strong PGD, uniform samples, box corners) finds
    counterexamples: there the verdict must be "falsified"; and nothing is left undecided."""
    found_any = verified_any = False
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 4)
    for seed in range(6):
        model = _mlp(seed)
        x, y = _inputs(model, seed, 8, (4,))
        eps = 0.2
        lower, upper = linf_box(x, eps)
        generator = torch.Generator().manual_seed(seed)
        attacked = pgd_attack(
            model, x, y, eps, steps=40, restarts=3, loss="margin", generator=generator
        )
        unit = torch.cat([corners, torch.rand(2000, 4, generator=generator, dtype=torch.float64)])
        sampled = lower[:, None] + unit[None] * (upper - lower)[:, None]  # [batch, points, 4]
        with torch.no_grad():
            found = true_class_margin(model(attacked), y) <= 0
            sampled_margins = true_class_margin(
                model(sampled.flatten(0, 1)), y.repeat_interleave(len(unit))
            )
        found |= (sampled_margins.view(len(x), -1) <= 0).any(dim=1)
        statuses = _statuses(verify_exact(model, x, y, eps, fast_path=False))
        assert set(statuses) <= {"verified", "falsified"}
        for b in np.flatnonzero(found.numpy()):
            assert statuses[b] == "falsified", (seed, b)
        found_any |= bool(found.any())
        verified_any |= "verified" in statuses
    assert found_any and verified_any


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_counterexamples_lie_in_the_box_and_are_misclassified(dtype):
    cases = [(_mlp(seed), (4,), 0.2, seed) for seed in (2, 4, 6)]
    cases.append((random_network("cnn", 0, (1, 3, 3), classes=3), (1, 3, 3), 0.06, 0))
    deciders = set()
    for model, shape, eps, seed in cases:
        model = model.to(dtype)
        x, y = _inputs(model, seed, 4, shape)
        y[0] = (y[0] + 1) % 3  # one clean-misclassified sample
        lower, upper = linf_box(x, eps)
        for fast_path in (False, True):
            verdicts = verify_exact(model, x, y, eps, fast_path=fast_path, **FAST)
            for b, verdict in enumerate(verdicts):
                if verdict.status != "falsified":
                    assert verdict.x_adv is None
                    continue
                deciders.add(verdict.decided_by)
                point = verdict.x_adv
                assert point.dtype == dtype and point.shape == x[b].shape
                assert (point >= lower[b]).all() and (point <= upper[b]).all()
                with torch.no_grad():
                    assert true_class_margin(model(point[None]), y[b : b + 1]).item() <= 0
    assert deciders == {"milp", "attack"}


def test_fast_path_and_plain_milp_agree():
    """The fast path (also with a useless attack, so that the MILP gets the rows CROWN
    skipped), the plain MILP with CROWN big-M constants, and the plain MILP with milp.py's
    own (independent) interval constants give the same verdicts."""
    cases = [(_mlp(seed), (4,), 0.2, seed) for seed in range(6)]
    cases.append((random_network("cnn", 0, (1, 3, 3), classes=3), (1, 3, 3), 0.06, 0))
    deciders, statuses = set(), set()
    for model, shape, eps, seed in cases:
        x, y = _inputs(model, seed, 6 if len(shape) == 1 else 4, shape)
        fast = verify_exact(model, x, y, eps, **FAST)
        crown_only = verify_exact(model, x, y, eps, pgd_steps=0, pgd_restarts=1)
        plain = verify_exact(model, x, y, eps, fast_path=False)
        reference = verify_exact(model, x, y, eps, fast_path=False, relu_bounds="interval")
        expected = _statuses(reference)
        assert _statuses(fast) == _statuses(crown_only) == _statuses(plain) == expected, seed
        deciders |= {verdict.decided_by for verdict in fast}
        statuses |= set(_statuses(plain))
    assert statuses == {"verified", "falsified"}
    assert deciders == {"crown", "attack", "milp"}, "every stage of the fast path must be used"


def test_a_tiny_time_limit_gives_timeouts_not_wrong_verdicts():
    """This network needs about a second per sample; 20 ms is far too little."""
    model = _mlp(7, (8, 48, 48, 3))
    x, y = _inputs(model, 7, 3, (8,))
    verdicts = verify_exact(model, x, y, 0.2, time_limit=0.02, fast_path=False)
    assert _statuses(verdicts) == ["timeout"] * 3
    assert all(verdict.x_adv is None and verdict.seconds < 1.0 for verdict in verdicts)


@needs_marabou
def test_marabou_timeout():
    """Marabou needs about 7 s for this sample; its limit has whole-second resolution."""
    model = _mlp(7, (8, 64, 64, 64, 64, 3))
    generator = torch.Generator().manual_seed(7)
    x = torch.rand(1, 8, generator=generator, dtype=torch.float64)
    y = model(x).argmax(1)
    (verdict,) = verify_exact(model, x, y, 0.2, time_limit=1, fast_path=False, backend="marabou")
    assert verdict.status == "timeout" and verdict.seconds < 2.5


DECIDED = ("verified", "falsified")


def _normalized_mlp(seed: int) -> nn.Sequential:
    """Normalize + Flatten in front of an MLP on [1, 2, 2] images (folded by Marabou)."""
    return nn.Sequential(Normalize([0.4], [0.3]), nn.Flatten(), *_mlp(seed)).double().eval()


@needs_marabou
def test_marabou_agrees_with_the_milp():
    cases = [(_mlp(seed), (4,)) for seed in range(6)]
    cases += [(_normalized_mlp(seed), (1, 2, 2)) for seed in (6, 7)]
    statuses, undecided = set(), 0
    for seed, (model, shape) in enumerate(cases):
        x, y = _inputs(model, seed, 8, shape)
        milp = verify_exact(model, x, y, 0.2, fast_path=False)
        marabou = verify_exact(model, x, y, 0.2, fast_path=False, backend="marabou")
        for ours, theirs in zip(_statuses(milp), _statuses(marabou), strict=True):
            if theirs in DECIDED:
                assert theirs == ours, seed  # two complete verifiers never disagree
            else:  # Marabou's rare tie within its tolerance ("unknown"), or a slow machine
                undecided += 1
        assert {verdict.decided_by for verdict in marabou} == {"marabou"}
        lower, upper = linf_box(x, 0.2)
        for b, verdict in enumerate(marabou):
            if verdict.status == "falsified":
                point = verdict.x_adv
                assert (point >= lower[b]).all() and (point <= upper[b]).all()
                assert true_class_margin(model(point[None]), y[b : b + 1]).item() <= 0
        statuses |= set(_statuses(milp))
    assert statuses == {"verified", "falsified"}
    assert undecided <= 2, f"Marabou left {undecided} of {8 * len(cases)} samples undecided"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eps": -0.1}, "eps must be"),
        ({"eps": math.nan}, "eps must be"),
        ({"eps": math.inf}, "eps must be"),
        ({"time_limit": 0}, "time_limit must be"),
        ({"time_limit": -1.0}, "time_limit must be"),
        ({"time_limit": math.inf}, "time_limit must be"),
        ({"backend": "gurobi"}, "unknown backend"),
        ({"relu_bounds": "ibp"}, "unknown relu_bounds"),
        ({"pgd_restarts": 0}, "pgd_restarts"),
        ({"y": torch.tensor([0.0, 1.0])}, "integer labels"),
        ({"y": torch.tensor([0, 3])}, "labels must lie in"),
    ],
)
def test_bad_arguments_are_rejected(options, message):
    model = _mlp(0)
    arguments = {"x": torch.full((2, 4), 0.5, dtype=torch.float64), "y": torch.tensor([0, 1])}
    arguments["eps"] = 0.1
    arguments.update(options)
    with pytest.raises(ValueError, match=message):
        verify_exact(model, **arguments)


def test_unsupported_layers_are_rejected():
    """milp.py alone would treat Tanh as affine; the layer check must stop it."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double().eval()
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        verify_exact(model, torch.rand(1, 2, dtype=torch.float64), torch.tensor([0]), 0.1)


@needs_marabou
def test_marabou_rejects_layers_beyond_linear_and_relu():
    model = random_network("mlp_bn", 0, (1, 2, 2), classes=3)
    with pytest.raises(UnsupportedLayerError, match="BatchNorm1d"):
        verify_exact(
            model,
            torch.rand(1, 1, 2, 2, dtype=torch.float64),
            torch.tensor([0]),
            0.1,
            backend="marabou",
        )


def test_missing_maraboupy_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "maraboupy", None)
    with pytest.raises(BackendUnavailableError, match="pip install maraboupy"):
        verify_exact(
            _mlp(0),
            torch.rand(1, 4, dtype=torch.float64),
            torch.tensor([0]),
            0.1,
            backend="marabou",
        )


def test_train_mode_model_is_verified_in_eval_mode_and_restored():
    model = random_network("mlp_bn", 3, (1, 2, 2), classes=3)
    x, y = _inputs(model, 3, 6, (1, 2, 2))
    expected = _statuses(verify_exact(model, x, y, 0.15, fast_path=False))
    model.train()
    assert _statuses(verify_exact(model, x, y, 0.15, fast_path=False)) == expected
    assert model.training
    assert verify_exact(model, x[:0], y[:0], 0.15) == []


# --- branch and bound (trainables/certify/bab.py) against the MILP and by construction ---

#: MILP-sized random networks of every layer mix (tests/random_networks.py) as
#: (family, input shape, eps, seed), chosen so that CROWN and alpha-CROWN leave samples for
#: the search itself; the slow ones take the MILP tens of seconds.
BAB_CASES = [
    ("mlp", (1, 2, 2), 0.3, 0),
    ("mlp", (1, 3, 3), 0.3, 2),
    ("mlp_bn", (1, 2, 3), 0.15, 0),
    ("mlp_bn", (1, 2, 3), 0.15, 1),
    ("mlp_bn", (1, 2, 2), 0.25, 2),
    ("nested_odd", (1, 3, 3), 0.25, 0),
    ("nested_odd", (1, 3, 3), 0.4, 0),
]
SLOW_BAB_CASES = [
    ("cnn", (1, 3, 3), 0.12, 1),
    ("cnn", (1, 3, 3), 0.2, 1),
    ("cnn_bn_pool", (1, 4, 4), 0.25, 1),
]


def _bab_against_milp(cases) -> None:
    """Without the up-front attack, so that the search must find counterexamples itself.

    Never verified where the MILP falsifies, never falsified where it verifies, decides
    (nearly) everything the MILP decides, and the search (not only the bounds) is used."""
    searched, decided, milp_decided, statuses = 0, 0, 0, set()
    for family, shape, eps, seed in cases:
        model = random_network(family, seed, shape)
        x, y = _inputs(model, seed, 6, shape)
        milp = verify_exact(model, x, y, eps, pgd_steps=10, pgd_restarts=1)
        bab = verify_bab(model, x, y, eps, time_limit=30, pgd_steps=0)
        for ours, theirs in zip(bab, milp, strict=True):
            if theirs.status == "falsified":
                assert ours.status != "verified", (family, seed)
            if ours.status in DECIDED and theirs.status in DECIDED:
                assert ours.status == theirs.status, (family, seed)
            decided += ours.status in DECIDED
            milp_decided += theirs.status in DECIDED
            searched += ours.decided_by == "bab"
            statuses.add(ours.status)
    assert {"verified", "falsified"} <= statuses
    assert decided >= milp_decided - 1
    assert searched >= len(cases), f"only {searched} samples reached the search"


def test_bab_agrees_with_the_milp_on_every_decided_sample():
    _bab_against_milp(BAB_CASES)


@pytest.mark.slow
def test_bab_agrees_with_the_milp_on_harder_networks():
    _bab_against_milp(SLOW_BAB_CASES)


def test_bab_agrees_with_brute_force_on_two_dimensional_networks():
    truths = []
    for seed in range(3):
        model = _mlp(seed, (2, 16, 16, 3))
        x, y = _inputs(model, seed, 8, (2,))
        lower, upper = linf_box(x, 0.15)
        verdicts = verify_bab(model, x, y, 0.15, pgd_steps=0)
        for b in range(len(x)):
            truth = _brute_force_truth(model, lower[b], upper[b], int(y[b]))
            truths.append(truth)
            if truth is not None:
                assert verdicts[b].status == truth, (seed, b)
    assert {"verified", "falsified"} <= set(truths)


def test_bab_known_answer_by_construction():
    """|x_1 - x_2| against a threshold (see test_known_answer_by_construction)."""
    threshold = 0.3
    model = _abs_difference_network(threshold)
    values = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    points = torch.cartesian_prod(values, values)
    x = torch.cat([points, points])
    y = torch.cat([torch.zeros(len(points)), torch.ones(len(points))]).long()
    eps = 0.2
    lower, upper = linf_box(x, eps)
    gap_low = torch.stack(
        [lower[:, 0] - upper[:, 1], lower[:, 1] - upper[:, 0], torch.zeros(len(x))]
    ).amax(0)
    gap_high = torch.stack([upper[:, 0] - lower[:, 1], upper[:, 1] - lower[:, 0]]).amax(0)
    exact_margin = torch.where(y == 0, gap_low - threshold, threshold - gap_high)
    verdicts = verify_bab(model, x, y, eps, pgd_steps=0)
    for margin, verdict in zip(exact_margin, verdicts, strict=True):
        if abs(margin) > 1e-3:
            assert verdict.status == ("verified" if margin > 0 else "falsified")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bab_counterexamples_lie_in_the_box_and_flip_the_prediction(dtype):
    """Checked here on the float64 network, independently of the verifier's own check."""
    deciders = set()
    for seed in (2, 6):
        model = _mlp(seed).to(dtype)
        x, y = _inputs(model, seed, 6, (4,))
        y[0] = (y[0] + 1) % 3  # one clean-misclassified sample
        lower, upper = linf_box(x, 0.2)
        for pgd_steps in (0, 20):
            for b, verdict in enumerate(verify_bab(model, x, y, 0.2, pgd_steps=pgd_steps)):
                if verdict.status != "falsified":
                    assert verdict.x_adv is None
                    continue
                deciders.add(verdict.decided_by)
                point = verdict.x_adv
                assert point.dtype == dtype and point.shape == x[b].shape
                assert (point >= lower[b]).all() and (point <= upper[b]).all()
                with torch.no_grad():
                    logits = model.double()(point[None].double())
                    model.to(dtype)
                assert true_class_margin(logits, y[b : b + 1]).item() <= 0
    assert {"clean", "attack", "bab"} <= deciders


def test_bab_a_tiny_time_limit_gives_timeouts_not_wrong_verdicts():
    """The search gets 10 ms: what the bounds do not decide times out."""
    model = _mlp(7, (8, 48, 48, 3))
    x, y = _inputs(model, 7, 3, (8,))
    verdicts = verify_bab(model, x, y, 0.2, time_limit=0.01, pgd_steps=0, root_iterations=1)
    assert "timeout" in _statuses(verdicts)
    for verdict in verdicts:
        assert verdict.status == "timeout" or verdict.decided_by in ("crown", "alpha-crown")
        assert verdict.x_adv is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eps": -0.1}, "eps must be"),
        ({"time_limit": 0}, "time_limit must be"),
        ({"batch_domains": 0}, "batch_domains"),
        ({"iterations": 0}, "iterations"),
        ({"y": torch.tensor([0.0, 1.0])}, "integer labels"),
        ({"y": torch.tensor([0, 3])}, "labels must lie in"),
    ],
)
def test_bab_bad_arguments_are_rejected(options, message):
    arguments = {"x": torch.full((2, 4), 0.5, dtype=torch.float64), "y": torch.tensor([0, 1])}
    arguments["eps"] = 0.1
    arguments.update(options)
    with pytest.raises(ValueError, match=message):
        verify_bab(_mlp(0), **arguments)
