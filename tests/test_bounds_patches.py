"""Full CROWN's fast paths compute the same bounds as the plain dense computation.

Patches-form coefficients (either row grouping), chunking, BatchNorm folding and small
convolutions as matrices are implementation choices: each must agree with the dense
backward pass to float tolerance on random convolutional networks (the dense one is
tested against samples, attacks and MILP minima elsewhere).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from random_networks import random_box, random_network

from trainables.bounds import linear
from trainables.bounds.interval import propagate_intervals
from trainables.bounds.ops import ChannelAffineOp, ConvOp, ReLUOp, densify, fuse_affine, linearize
from trainables.models import build_model

CONV_FAMILIES = ("cnn", "cnn_bn_pool", "nested_odd")


def _relu_and_spec_bounds(ops, lower, upper, **options):
    relu_bounds = linear.crown_relu_bounds(ops, lower, upper, **options)
    return relu_bounds, linear.spec_bounds(ops, lower, upper, None, relu_bounds)


@pytest.mark.parametrize("family", CONV_FAMILIES)
@pytest.mark.parametrize("grouping", ["positions", "neurons"])
def test_patches_form_crown_equals_dense_crown(family, grouping, monkeypatch):
    """Images large enough (12x12) that windows stay smaller than the image for a while."""
    fraction = 0.0 if grouping == "positions" else 2.0  # force one row grouping
    monkeypatch.setattr(linear, "POSITION_GROUP_FRACTION", fraction)
    for seed in range(2):
        model = random_network(family, seed, (2, 12, 12))
        x, lower, upper = random_box(seed, batch=3, shape=(2, 12, 12), max_eps=0.05)
        ops, _ = linearize(model, x)
        with torch.no_grad():
            dense_relu, dense = _relu_and_spec_bounds(ops, lower, upper, patches=False)
            patch_relu, patch = _relu_and_spec_bounds(ops, lower, upper, chunk_elements=20_000)
            _, ibp = propagate_intervals(ops, lower, upper)
        for got, want in zip(patch, dense, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        for (low, high), (dense_low, dense_high), (ibp_low, ibp_high) in zip(
            patch_relu, dense_relu, ibp, strict=True
        ):
            unstable = (ibp_low < 0) & (ibp_high > 0)  # the neurons both bound by CROWN
            torch.testing.assert_close(low[unstable], dense_low[unstable], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(high[unstable], dense_high[unstable], rtol=1e-9, atol=1e-9)


def test_patches_form_is_used_and_converts_to_dense_on_cnn7():
    """The zoo's CNN7 at 16x16: patches for most of each pass, dense once windows cover
    the image; the result equals the dense computation."""
    torch.manual_seed(0)
    model = build_model("cnn7", (1, 16, 16), 3, width=2, linear_size=8).double().eval()
    x, lower, upper = random_box(0, batch=2, shape=(1, 16, 16), max_eps=0.01)
    ops, _ = linearize(model, x)
    with torch.no_grad():
        _, dense = _relu_and_spec_bounds(ops, lower, upper, patches=False)
        _, patch = _relu_and_spec_bounds(ops, lower, upper)
    for got, want in zip(patch, dense, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    prepared, _, _ = linear.prepare(ops, lower, upper)
    position = [i for i, op in enumerate(prepared) if isinstance(op, ReLUOp)][3]
    # from conv4 back to the input: 3 -> 5 -> 7 (stride 2 from here) -> 15 -> 17 > 16
    assert linear.row_elements(prepared[:position], lower, patches=True) < 4 * 16 * 16


@pytest.mark.parametrize("family", (*CONV_FAMILIES, "mlp_bn"))
def test_folded_and_densified_ops_compute_the_same_function(family):
    shape = (2, 3, 3) if family == "mlp_bn" else (2, 6, 6)
    model = random_network(family, 0, shape)
    x, _, _ = random_box(0, batch=4, shape=shape)
    ops, _ = linearize(model, x)
    for transformed in (fuse_affine(ops), densify(fuse_affine(ops)), densify(ops)):
        out = x
        for op in transformed:
            out = torch.relu(out) if isinstance(op, ReLUOp) else op.forward(out)
        torch.testing.assert_close(out, model(x))
    fused = fuse_affine(ops)
    assert not any(
        isinstance(op, ChannelAffineOp) and isinstance(previous, ConvOp)
        for previous, op in itertools.pairwise(fused)
    ), "a BatchNorm after a convolution was not folded"
    assert not any(isinstance(op, ConvOp) for op in densify(ops)), "small convs stay convs"
