"""Certified and adversarial losses on hand-built margins, and the warm-up regularisers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.bounds import margin_spec
from trainables.losses.adversarial import trades_kl, trades_loss
from trainables.losses.certified import (
    cc_ibp_loss,
    exp_ibp_loss,
    l1_penalty,
    margin_cross_entropy,
    margins_of,
    mtl_ibp_loss,
    sabr_box,
)
from trainables.losses.regularizers import relu_balance_term, tightness_term


def test_margin_cross_entropy_hand_value() -> None:
    margins = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    expected = [math.log(1 + math.exp(-1) + math.exp(-2)), math.log(1 + 1 + math.e)]
    assert margin_cross_entropy(margins, "none").tolist() == pytest.approx(expected)
    assert margin_cross_entropy(margins).item() == pytest.approx(sum(expected) / 2)


def test_margin_cross_entropy_of_exact_margins_is_cross_entropy() -> None:
    logits, labels = (
        torch.randn(6, 5, generator=torch.Generator().manual_seed(1)),
        torch.arange(6) % 5,
    )
    margins = margins_of(logits, margin_spec(labels, 5))
    assert margin_cross_entropy(margins).item() == pytest.approx(
        F.cross_entropy(logits, labels).item()
    )


def test_margin_cross_entropy_is_stable_for_large_margins() -> None:
    values = margin_cross_entropy(torch.tensor([[1e4, 2e4], [-1e4, 5.0]]), "none")
    assert torch.isfinite(values).all()
    assert values[1].item() == pytest.approx(1e4)


def test_cc_ibp_reduces_to_the_adversarial_and_the_ibp_loss() -> None:
    bound = torch.tensor([[-0.5, 0.3], [0.1, -2.0]])
    adv = torch.tensor([[1.0, 2.0], [0.5, 0.2]])
    assert cc_ibp_loss(bound, adv, 0.0).item() == pytest.approx(margin_cross_entropy(adv).item())
    assert cc_ibp_loss(bound, adv, 1.0).item() == pytest.approx(margin_cross_entropy(bound).item())
    mixed = margin_cross_entropy(0.25 * bound + 0.75 * adv).item()
    assert cc_ibp_loss(bound, adv, 0.25).item() == pytest.approx(mixed)
    # the convex combination is taken before the loss, not after
    assert mixed != pytest.approx(
        0.25 * margin_cross_entropy(bound).item() + 0.75 * margin_cross_entropy(adv).item()
    )


def test_mtl_and_exp_ibp() -> None:
    ibp, adv = torch.tensor(2.0), torch.tensor(0.5)
    assert mtl_ibp_loss(ibp, adv, 0.3).item() == pytest.approx(0.3 * 2.0 + 0.7 * 0.5)
    assert exp_ibp_loss(ibp, adv, 0.3).item() == pytest.approx(2.0**0.3 * 0.5**0.7)
    assert exp_ibp_loss(ibp, adv, 1.0).item() == pytest.approx(2.0)
    assert exp_ibp_loss(ibp, adv, 0.0).item() == pytest.approx(0.5)


def test_sabr_box_stays_in_the_clipped_box_and_keeps_its_width_at_the_pixel_range() -> None:
    x = torch.tensor([[0.5, 0.5, 0.02, 0.0, 1.0]])
    x_adv = torch.tensor([[0.6, 0.45, 0.0, 0.0, 1.0]])
    lower, upper = sabr_box(x, x_adv, eps=0.1, lam=0.25)
    # tau = 0.025. Clipped boxes [0.4, 0.6], [0.4, 0.6], [0, 0.12], [0, 0.1], [0.9, 1]; centres
    # clamped into them shrunk by tau: 0.6 -> 0.575, 0.45 stays, 0 -> 0.025, 0 -> 0.025,
    # 1 -> 0.975: every small box keeps its full width 0.05, even at 0 and 1
    assert lower[0].tolist() == pytest.approx([0.55, 0.425, 0.0, 0.0, 0.95])
    assert upper[0].tolist() == pytest.approx([0.6, 0.475, 0.05, 0.05, 1.0])
    assert (upper - lower).tolist()[0] == pytest.approx([0.05] * 5)
    assert (lower >= (x - 0.1).clamp(0, 1) - 1e-7).all()
    assert (upper <= (x + 0.1).clamp(0, 1) + 1e-7).all()


def test_trades_terms() -> None:
    clean = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    adv = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    p = torch.softmax(clean, dim=1)
    kl_first = (p[0] * (p[0].log() - torch.log(torch.tensor([0.5, 0.5])))).sum().item()
    assert trades_kl(clean, adv).item() == pytest.approx(kl_first / 2)
    labels = torch.tensor([0, 1])
    expected = F.cross_entropy(clean, labels).item() + 6.0 * kl_first / 2
    assert trades_loss(clean, adv, labels, 6.0).item() == pytest.approx(expected)


def test_l1_penalty_sums_weights_only() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
        model[2].weight.fill_(0.5)
        model[0].bias.fill_(100.0)
    assert l1_penalty(model).item() == pytest.approx(4 * 1.0 + 2 * 0.5)


def test_regularisers_hand_example() -> None:
    low = torch.tensor([[-1.0, 1.0, -3.0]])
    high = torch.tensor([[1.0, 2.0, -1.0]])
    box = (torch.zeros(1, 4), torch.full((1, 4), 0.2))  # input radius 0.1
    # layer radii 1, 0.5, 1: mean 5/6; 0.1 / (5/6) = 0.12
    assert tightness_term(box, [(low, high)], tau=0.5).item() == pytest.approx((0.5 - 0.12) / 0.5)
    # centres 0, 1.5, -2: mean ratio 0.5 / (2/3) = 0.75; deviations from -1/6:
    # active 25/9, inactive 121/36, ratio 100/121
    expected = (1 - 0.75) + (1 - 100 / 121)
    assert relu_balance_term([(low, high)], tau=1.0).item() == pytest.approx(expected)
    assert relu_balance_term([(low, high)], tau=0.5).item() == pytest.approx(0.0)


def test_relu_balance_ignores_layers_without_inactive_neurons() -> None:
    low, high = torch.tensor([[0.5, -1.0]]), torch.tensor([[1.0, 1.0]])
    assert relu_balance_term([(low, high)], tau=0.5).item() == 0.0
