"""Every bound must contain every reachable output: random samples, box corners, PGD.

Seeded random networks of every supported layer mix (see random_networks.py), every
method, C folded in and not. A failure here means a certificate could be wrong.
"""

from __future__ import annotations

import pytest
import torch
from random_networks import FAMILIES, random_box, random_network, randomize_batchnorm

from trainables.attacks import pgd_minimize
from trainables.bounds import METHODS, compute_bounds, margin_spec
from trainables.models import CERTIFIABLE_MODELS, build_model

SEEDS = range(4)
#: alpha-CROWN runs 20 bound passes with autograd per call: fewer seeds keep the suite fast.
ALPHA_SEEDS = range(2)
SHAPES = {"mlp": (1, 4, 4), "mlp_bn": (2, 3, 3)}
TOLERANCE = 1e-9  # float64 networks: rounding only


def _spec_outputs(model, C, x):
    """``C f(x)`` for a batch ``x`` [batch, *shape] -> [batch, specs]."""
    return torch.einsum("bso,bo->bs", C, model(x))


def _sampled_points(lower, upper, count, seed):
    """Uniform samples and random vertices of each sample's box: [count, batch, *shape]."""
    generator = torch.Generator().manual_seed(seed)
    shape = (count, *lower.shape)
    uniform = torch.rand(shape, generator=generator, dtype=lower.dtype)
    corners = torch.randint(0, 2, shape, generator=generator).to(lower.dtype)
    t = torch.cat([uniform[: count // 2], corners[count // 2 :]])
    return lower + t * (upper - lower)


def _case(family, seed):
    shape = SHAPES.get(family, (1, 6, 6))
    model = random_network(family, seed, shape)
    x, lower, upper = random_box(seed, batch=3, shape=shape)
    labels = model(x).argmax(dim=1)
    return model, lower, upper, margin_spec(labels, 4, dtype=torch.float64)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", METHODS)
def test_sampled_points_lie_within_bounds(family, method):
    for seed in ALPHA_SEEDS if method == "alpha-crown" else SEEDS:
        model, lower, upper, C = _case(family, seed)
        with torch.no_grad():
            lb, ub = compute_bounds(model, lower, upper, method, C)
            raw_lb, raw_ub = compute_bounds(model, lower, upper, method)
            points = _sampled_points(lower, upper, 400, seed)
            values = torch.stack([_spec_outputs(model, C, p) for p in points])
            logits = torch.stack([model(p) for p in points])
        assert (values >= lb - TOLERANCE).all(), f"{family}/{method}/seed {seed}: below lb"
        assert (values <= ub + TOLERANCE).all(), f"{family}/{method}/seed {seed}: above ub"
        assert (logits >= raw_lb - TOLERANCE).all() and (logits <= raw_ub + TOLERANCE).all()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", METHODS)
def test_attacked_points_lie_within_bounds(family, method):
    for seed in ALPHA_SEEDS if method == "alpha-crown" else SEEDS:
        model, lower, upper, C = _case(family, seed)
        with torch.no_grad():
            lb, ub = compute_bounds(model, lower, upper, method, C)
        for row in range(C.shape[1]):
            for sign in (1.0, -1.0):
                _, value = pgd_minimize(
                    lambda z, r=row, s=sign, m=model, c=C: s * _spec_outputs(m, c, z)[:, r],
                    lower,
                    upper,
                    steps=15,
                    generator=torch.Generator().manual_seed(seed),
                )
                reached = sign * value
                if sign > 0:
                    assert (reached >= lb[:, row] - TOLERANCE).all(), (family, method, seed)
                else:
                    assert (reached <= ub[:, row] + TOLERANCE).all(), (family, method, seed)


def test_attack_gets_close_to_crown_on_a_tiny_network():
    """The PGD check above is only meaningful if the attack actually pushes the margin."""
    model, lower, upper, C = _case("mlp", 0)
    with torch.no_grad():
        lb, _ = compute_bounds(model, lower, upper, "crown", C)
        centre_values = _spec_outputs(model, C, (lower + upper) / 2)
    _, attacked = pgd_minimize(lambda z: _spec_outputs(model, C, z)[:, 0], lower, upper, steps=30)
    assert (attacked < centre_values[:, 0]).all()
    assert (attacked >= lb[:, 0] - TOLERANCE).all()


@pytest.mark.parametrize("method", METHODS)
def test_train_mode_batchnorm_uses_the_reference_batch_statistics(method):
    """Train-mode BN bounds are the bounds of the network frozen at the reference statistics."""
    model = random_network("cnn_bn_pool", 3).train()
    x, lower, upper = random_box(3, batch=5, shape=(1, 6, 6))
    running = [m.running_mean.clone() for m in model.modules() if hasattr(m, "running_mean")]
    lb, ub = compute_bounds(model, lower, upper, method, bn_reference=x)
    after = [m.running_mean for m in model.modules() if hasattr(m, "running_mean")]
    assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True)), "stats updated"

    frozen = random_network("cnn_bn_pool", 3)  # same seed: same weights, eval mode
    with torch.no_grad():
        _freeze_batchnorm_at(frozen, x)
    frozen_lb, frozen_ub = compute_bounds(frozen, lower, upper, method)
    # alpha-CROWN's sign-like Adam steps amplify the statistics' rounding differences.
    tolerance = {"rtol": 1e-3, "atol": 1e-3} if method == "alpha-crown" else {}
    torch.testing.assert_close(lb, frozen_lb, **tolerance)
    torch.testing.assert_close(ub, frozen_ub, **tolerance)
    with torch.no_grad():
        for points in _sampled_points(lower, upper, 200, 3):
            out = frozen(points)
            assert (out >= lb - TOLERANCE).all() and (out <= ub + TOLERANCE).all()


@pytest.mark.parametrize("method", METHODS)
def test_float32_bounds_are_sound_up_to_rounding(method):
    model = random_network("cnn_bn_pool", 1).float()
    x, lower, upper = random_box(1, batch=4, shape=(1, 6, 6), dtype=torch.float32)
    C = margin_spec(model(x).argmax(1), 4)
    with torch.no_grad():
        lb, ub = compute_bounds(model, lower, upper, method, C)
        values = torch.stack(
            [_spec_outputs(model, C, p) for p in _sampled_points(lower, upper, 300, 1)]
        )
    assert lb.dtype == torch.float32
    assert (values >= lb - 1e-5).all() and (values <= ub + 1e-5).all()


@pytest.mark.parametrize("name", CERTIFIABLE_MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_zoo_models_are_bounded_soundly(name, method):
    """The architectures users train, at small widths, in eval and train mode."""
    options = {"cnn7": {"width": 2, "linear_size": 8}, "cnn7_tin": {"width": 2, "linear_size": 8}}
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 4, mean=[0.3], std=[0.4], **options.get(name, {}))
    model = model.double()
    randomize_batchnorm(model, torch.Generator().manual_seed(0))
    x, lower, upper = random_box(0, batch=4, shape=(1, 8, 8), max_eps=0.05)
    for training in (False, True):
        model.train(training)
        with torch.no_grad():
            lb, ub = compute_bounds(model, lower, upper, method, bn_reference=x)
            model.eval()
            if training:  # train-mode bounds hold for the network frozen at x's statistics
                _freeze_batchnorm_at(model, x)
            points = _sampled_points(lower, upper, 200, 0)
            outputs = torch.stack([model(p) for p in points])
        assert (outputs >= lb - TOLERANCE).all() and (outputs <= ub + TOLERANCE).all()


def _freeze_batchnorm_at(model, x):
    activation = x
    for layer in model:
        if isinstance(layer, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            dims = [0, *range(2, activation.dim())]
            layer.running_mean.copy_(activation.mean(dim=dims))
            layer.running_var.copy_(activation.var(dim=dims, unbiased=False))
        activation = layer(activation)
