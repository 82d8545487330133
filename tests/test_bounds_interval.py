"""The fast IBP propagation computes exactly the textbook one: values and gradients.

``propagate_intervals`` folds BatchNorm into convolutions and runs each ReLU step as one
hand-differentiated autograd node; training back-propagates through it, so both the
bounds and their gradients must equal the plain elementwise composition.
"""

from __future__ import annotations

import pytest
import torch
from random_networks import FAMILIES, random_box, random_network

from trainables.bounds.interval import _IntervalReLU, propagate_intervals
from trainables.bounds.ops import ReLUOp, linearize


def _textbook(ops, lower, upper):
    """IBP as the module docstring writes it, op by op, no folding."""
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    relu_inputs = []
    for op in ops:
        if isinstance(op, ReLUOp):
            low, high = centre - radius, centre + radius
            relu_inputs.append((low, high))
            low, high = torch.relu(low), torch.relu(high)
            centre, radius = (high + low) / 2, (high - low) / 2
        else:
            centre, radius = op.forward(centre), op.abs_forward(radius)
    return (centre - radius, centre + radius), relu_inputs


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_propagation_and_its_gradients_equal_the_textbook_composition(family):
    shape = {"mlp": (1, 4, 4), "mlp_bn": (2, 3, 3)}.get(family, (1, 6, 6))
    model = random_network(family, 0, shape).train()  # BatchNorm from the reference batch
    x, lower, upper = random_box(0, batch=5, shape=shape)
    results = []
    for propagate in (propagate_intervals, _textbook):
        model.zero_grad()
        ops, _ = linearize(model, x)
        (low, high), relu_inputs = propagate(ops, lower, upper)
        # a loss that uses the output and every pre-activation bound (as warm-up terms do)
        loss = (low.sin() + high.cos()).sum() + sum((a * b).sum() for a, b in relu_inputs)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append(
            (low.detach(), high.detach(), [t.detach() for r in relu_inputs for t in r], grads)
        )
    fast, slow = results
    torch.testing.assert_close(fast[0], slow[0])
    torch.testing.assert_close(fast[1], slow[1])
    for a, b in zip(fast[2], slow[2], strict=True):
        torch.testing.assert_close(a, b)
    assert len(fast[3]) == len(slow[3]) > 0
    for a, b in zip(fast[3], slow[3], strict=True):
        torch.testing.assert_close(a, b)


def test_interval_relu_passes_gradcheck():
    generator = torch.Generator().manual_seed(0)
    centre = torch.randn(3, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    radius = torch.rand(3, 7, dtype=torch.float64, generator=generator).requires_grad_()
    assert torch.autograd.gradcheck(_IntervalReLU.apply, (centre, radius))
