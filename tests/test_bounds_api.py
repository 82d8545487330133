"""The bound entry point's contract: errors, shapes, dtypes, batching, gradients, certify."""

from __future__ import annotations

import pytest
import torch
from random_networks import random_box, random_network
from torch import nn

from trainables.bounds import (
    METHODS,
    BackendUnavailableError,
    UnsupportedLayerError,
    certify,
    compute_bounds,
    margin_spec,
)
from trainables.bounds.lirpa import lirpa_version
from trainables.models import build_model

BOX = (torch.zeros(2, 1, 6, 6), torch.ones(2, 1, 6, 6))
DIFFERENTIABLE = tuple(method for method in METHODS if method != "alpha-crown")


def test_margin_spec_rows_are_true_class_minus_each_other_class():
    C = margin_spec(torch.tensor([0, 2]), 3)
    expected = torch.tensor(
        [[[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], [[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0]]]
    )
    assert torch.equal(C, expected)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        margin_spec(torch.tensor([3]), 3)


class _Residual(nn.Module):
    def forward(self, x):
        return x + torch.relu(x)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Flatten(), nn.Tanh(), nn.Linear(36, 2)), "Tanh"),
        (nn.Sequential(nn.Flatten(), _Residual()), "_Residual"),
        (nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), "MaxPool2d"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")), "padding"),
        (nn.Sequential(nn.AvgPool2d(2, ceil_mode=True)), "ceil_mode"),
        (nn.Linear(36, 2), "needs a torch.nn.Sequential"),
    ],
)
def test_unsupported_layers_are_named(model, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        compute_bounds(model, *BOX)


def test_bad_boxes_and_specs_are_clear_errors():
    model = random_network("mlp", 0, (1, 6, 6)).float()
    lower, upper = BOX
    with pytest.raises(ValueError, match="x_lower > x_upper at 2 entries"):
        bad = lower.clone()
        bad[0, 0, 0, :2] = 2.0
        compute_bounds(model, bad, upper)
    with pytest.raises(ValueError, match="same shape"):
        compute_bounds(model, lower, upper[:1])
    with pytest.raises(ValueError, match="unknown bound method 'deeppoly'"):
        compute_bounds(model, lower, upper, "deeppoly")
    with pytest.raises(ValueError, match=r"C must have shape \[batch=2"):
        compute_bounds(model, lower, upper, C=torch.ones(3, 1, 4))
    with pytest.raises(ValueError, match="C has 5 columns but the model has 4 outputs"):
        compute_bounds(model, lower, upper, C=torch.ones(2, 1, 5))


@pytest.mark.parametrize("method", METHODS)
def test_batch_size_one_and_large_batches_give_per_sample_bounds(method):
    model = random_network("cnn_bn_pool", 2)
    batch = 40 if method == "alpha-crown" else 300  # alpha-CROWN: 20 passes with autograd
    _, lower, upper = random_box(2, batch=batch, shape=(1, 6, 6))
    lb, ub = compute_bounds(model, lower, upper, method)
    for i in (0, batch // 2, batch - 1):
        single_lb, single_ub = compute_bounds(model, lower[i : i + 1], upper[i : i + 1], method)
        torch.testing.assert_close(lb[i : i + 1], single_lb)
        torch.testing.assert_close(ub[i : i + 1], single_ub)


@pytest.mark.parametrize("method", METHODS)
def test_a_point_box_gives_the_exact_output(method):
    model = random_network("cnn", 1)
    x, _, _ = random_box(1, batch=3, shape=(1, 6, 6))
    lb, ub = compute_bounds(model, x, x, method)
    torch.testing.assert_close(lb, model(x))
    torch.testing.assert_close(ub, model(x))


def test_full_crown_does_not_depend_on_the_chunk_size():
    model = random_network("cnn_bn_pool", 0)
    _, lower, upper = random_box(0, batch=3, shape=(1, 6, 6))
    reference = compute_bounds(model, lower, upper, "crown")
    for chunk in (1, 5_000):  # one neuron per backward pass / a few dozen
        for got, want in zip(
            compute_bounds(model, lower, upper, "crown", chunk_elements=chunk),
            reference,
            strict=True,
        ):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("method", DIFFERENTIABLE)
def test_bounds_are_differentiable_and_training_through_them_helps(method):
    """A few gradient steps on the IBP-style loss raise the worst-case margin's lower bound."""
    torch.manual_seed(0)
    model = build_model("cnn7", (1, 8, 8), 3, width=2, linear_size=8).train()
    x, lower, upper = random_box(0, batch=16, shape=(1, 8, 8), dtype=torch.float32, max_eps=0.02)
    y = torch.arange(16) % 3
    C = margin_spec(y, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        lb, _ = compute_bounds(model, lower, upper, method, C, bn_reference=x)
        loss = nn.functional.cross_entropy(
            torch.cat([torch.zeros_like(lb[:, :1]), -lb], 1), torch.zeros(16, dtype=torch.long)
        )
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        optimizer.step()
        first = lb.mean().item() if first is None else first
    assert lb.mean().item() > first


def test_certify_clips_the_box_and_matches_the_margin_bounds():
    model = random_network("cnn", 0).float()
    x = torch.rand(8, 1, 6, 6)
    x[:, :, :2] = 0.0  # part of the box would fall below 0 without clipping
    y = model(x).argmax(1)
    eps = 0.01
    mask = certify(model, x, y, eps, "crown")
    lb, _ = compute_bounds(
        model, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1), "crown", margin_spec(y, 4)
    )
    assert torch.equal(mask, (lb > 0).all(1))
    assert torch.equal(certify(model, x, y, 0.0, "ibp"), torch.ones(8, dtype=torch.bool))
    wrong = (y + 1) % 4
    assert not certify(model, x, wrong, 0.0, "ibp").any()


def test_certify_uses_eval_mode_and_restores_the_mode():
    model = build_model("cnn7", (1, 8, 8), 3, width=2, linear_size=8)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
            layer.running_mean.fill_(5.0)  # eval-mode statistics far from any batch's
    model.train()
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    eval_bounds = compute_bounds(model.eval(), x, x, "ibp", margin_spec(y, 3))[0]
    model.train()
    assert torch.equal(certify(model, x, y, 0.0), (eval_bounds > 0).all(1))
    assert model.training


def test_certify_rejects_negative_eps():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        certify(
            random_network("mlp", 0, (1, 6, 6)), torch.rand(1, 1, 6, 6), torch.tensor([0]), -0.1
        )


@pytest.mark.skipif(lirpa_version() is not None, reason="auto_LiRPA is installed")
def test_auto_lirpa_backend_without_auto_lirpa_is_a_clear_error():
    with pytest.raises(BackendUnavailableError, match=r"auto_LiRPA >= 0\.5"):
        compute_bounds(
            random_network("mlp", 0, (1, 6, 6)), *[b.double() for b in BOX], backend="auto_lirpa"
        )


@pytest.mark.skipif(
    lirpa_version() is None or lirpa_version() < (0, 5), reason="needs auto_LiRPA >= 0.5"
)
@pytest.mark.parametrize("method", METHODS)
def test_auto_lirpa_backend_agrees_with_native_bounds(method):  # pragma: no cover - optional
    model = random_network("cnn", 0).float()
    _, lower, upper = random_box(0, batch=2, shape=(1, 6, 6), dtype=torch.float32)
    native = compute_bounds(model, lower, upper, method)
    lirpa = compute_bounds(model, lower, upper, method, backend="auto_lirpa")
    for a, b in zip(native, lirpa, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
@pytest.mark.parametrize("method", METHODS)
def test_bounds_on_gpu_match_cpu(method):  # pragma: no cover - GPU machines only
    model = random_network("cnn_bn_pool", 0)
    _, lower, upper = random_box(0, batch=4, shape=(1, 6, 6))
    cpu = compute_bounds(model, lower, upper, method)
    gpu = compute_bounds(model.cuda(), lower.cuda(), upper.cuda(), method)
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(a, b.cpu())
