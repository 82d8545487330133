"""Tests for randomized smoothing: statistics on fixed counts, sampling, PREDICT, CERTIFY."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn
from torch.utils.data import TensorDataset

from trainables.certify.smoothing import (
    ABSTAIN,
    SmoothingResult,
    certified_accuracy,
    certify_from_counts,
    certify_smoothed,
    predict,
    predict_from_counts,
    sample_counts,
)

SHAPE = (1, 2, 2)


class ConstantModel(nn.Module):
    """Always the same logits; records the batch sizes and modes it is called with."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))
        self.batch_sizes: list[int] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        self.modes.append(self.training)
        return self.logits.expand(x.shape[0], -1)


class SignModel(nn.Module):
    """Class 0 if the first input coordinate is positive, else class 1.

    Linear, so the smoothed classifier's exact radius is the distance |x0| to the boundary,
    with pA = Phi(|x0| / sigma); at x0 = 0 it is a fair coin.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, 0]
        return torch.stack([z, -z], dim=1)


def point(x0: float) -> torch.Tensor:
    x = torch.full(SHAPE, 0.25)
    x[0, 0, 0] = x0
    return x


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- statistics on fixed counts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "n", "sigma", "alpha"), [(990, 1000, 0.5, 0.001), (70, 100, 0.25, 0.01)]
)
def test_radius_from_counts_matches_clopper_pearson_by_hand(count, n, sigma, alpha):
    # One-sided Clopper-Pearson lower bound written via the Beta quantile, not binomtest.
    pa_lower = beta.ppf(alpha, count, n - count + 1)
    result = certify_from_counts(3, count, n, sigma, alpha)
    assert result.prediction == 3
    assert result.pA_lower == pytest.approx(pa_lower, rel=1e-10)
    assert result.radius == pytest.approx(sigma * norm.ppf(pa_lower), rel=1e-9)
    assert 0 < result.radius < sigma * norm.ppf(count / n)  # the bound is below the estimate


def test_all_votes_give_alpha_to_the_one_over_n():
    n, alpha, sigma = 1000, 0.001, 0.5
    result = certify_from_counts(1, n, n, sigma, alpha)
    assert result.pA_lower == pytest.approx(alpha ** (1 / n), rel=1e-12)
    assert result.radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)


def test_abstains_when_lower_bound_below_half():
    # 530 / 1000 is above 1/2 as an estimate, but its 99.9% lower bound is not.
    assert beta.ppf(0.001, 530, 471) < 0.5
    result = certify_from_counts(4, 530, 1000, 0.5, 0.001)
    assert result == SmoothingResult(prediction=ABSTAIN, radius=0.0, pA_lower=result.pA_lower)
    assert result.abstained
    assert result.pA_lower == pytest.approx(beta.ppf(0.001, 530, 471), rel=1e-10)
    # With a looser alpha the same counts certify a (small) radius.
    assert beta.ppf(0.2, 530, 471) > 0.5
    assert certify_from_counts(4, 530, 1000, 0.5, 0.2).prediction == 4


def test_predict_from_counts_uses_two_sided_binomial_test_of_top_two():
    counts = torch.tensor([5, 60, 40, 0])  # the 5 votes for class 0 must not enter the test
    p_value = binomtest(60, 100, p=0.5).pvalue
    assert 0.05 < p_value < 0.1
    assert predict_from_counts(counts, alpha=0.1) == 1
    assert predict_from_counts(counts, alpha=0.05) == ABSTAIN


# --- sampling --------------------------------------------------------------------------------


def test_sample_counts_adds_gaussian_noise_of_scale_sigma():
    # P(class 0) = Phi(x0 / sigma): wrong scaling or a missing x would shift it.
    x0, sigma, num = 0.3, 0.6, 20_000
    counts = sample_counts(SignModel(), point(x0), num, sigma, 1000, 2, seeded())
    assert counts.dtype == torch.long and counts.shape == (2,)
    assert int(counts.sum()) == num
    expected = norm.cdf(x0 / sigma)
    assert counts[0] / num == pytest.approx(expected, abs=4 * math.sqrt(0.25 / num))


def test_sample_counts_is_reproducible_with_a_generator():
    x = point(0.0)
    first = sample_counts(SignModel(), x, 500, 1.0, 64, 2, seeded(1))
    again = sample_counts(SignModel(), x, 500, 1.0, 64, 2, seeded(1))
    other = sample_counts(SignModel(), x, 500, 1.0, 64, 2, seeded(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_noise_is_drawn_in_batches():
    model = ConstantModel([0.0, 1.0, 0.0])
    certify_smoothed(model, point(0.0), 0.5, n0=100, n=1000, alpha=0.001, batch_size=64)
    assert max(model.batch_sizes) <= 64
    assert sum(model.batch_sizes) == 100 + 1000
    assert len(model.batch_sizes) == math.ceil(100 / 64) + math.ceil(1000 / 64)


def test_model_runs_in_eval_mode_and_mode_is_restored():
    model = ConstantModel([1.0, 0.0])
    model.train()
    sample_counts(model, point(0.0), 10, 0.5, 4, None)
    assert model.modes == [False, False, False]
    assert model.training


# --- PREDICT and CERTIFY on models --------------------------------------------------------------


def test_predict_abstains_on_fair_coin_and_answers_on_constant():
    x = point(0.0)
    assert (
        predict(SignModel(), x, 1.0, num_samples=2000, alpha=0.001, generator=seeded()) == ABSTAIN
    )
    assert predict(ConstantModel([0.0, 0.0, 3.0, 1.0]), x, 1.0, 2000, 0.001) == 2
    # Far on one side, the sign model is constant too.
    assert predict(SignModel(), point(-5.0), 1.0, 2000, 0.001, generator=seeded()) == 1


def test_constant_classifier_certifies_alpha_to_the_one_over_n():
    sigma, n, alpha = 0.25, 2000, 0.001
    model = ConstantModel([0.0, -1.0, 2.0, 0.5])
    result = certify_smoothed(model, point(0.0), sigma, n0=10, n=n, alpha=alpha, batch_size=500)
    assert result.prediction == 2
    assert result.pA_lower == pytest.approx(alpha ** (1 / n), rel=1e-12)
    assert result.radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)


def test_certify_abstains_on_fair_coin():
    result = certify_smoothed(SignModel(), point(0.0), 0.5, n0=100, n=2000, generator=seeded())
    assert result.prediction == ABSTAIN and result.radius == 0.0
    assert result.pA_lower < 0.5


def test_certified_radius_is_below_the_exact_radius_of_a_linear_classifier():
    sigma = 0.5
    result = certify_smoothed(SignModel(), point(0.6), sigma, n0=100, n=5000, generator=seeded())
    assert result.prediction == 0
    assert 0.45 < result.radius <= 0.6


# --- certified accuracy ----------------------------------------------------------------------

# First coordinate, label: an abstention, four correct points at growing distances from the
# boundary and a mislabelled one (exact radii are |x0|).
TINY = [(0.0, 0), (0.4, 0), (0.7, 0), (-0.5, 1), (0.6, 1), (-1.5, 1)]


def tiny_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.stack([point(x0) for x0, _ in TINY])
    labels = torch.tensor([label for _, label in TINY])
    return inputs, labels


def test_certified_accuracy_on_tiny_dataset():
    radii = [1.0, 0.0, 0.5, 0.25, 2.0]
    out = certified_accuracy(
        SignModel(),
        tiny_tensors(),
        0.5,
        radii,
        n0=50,
        n=2000,
        alpha=0.001,
        batch_size=500,
        progress=False,
        generator=seeded(),
    )
    accuracy = out["certified_accuracy"]
    assert set(accuracy) == set(radii)
    values = [accuracy[r] for r in sorted(radii)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values == pytest.approx([4 / 6, 4 / 6, 2 / 6, 1 / 6, 0.0])

    results = out["results"]
    assert [r["index"] for r in results] == list(range(len(TINY)))
    assert [r["label"] for r in results] == [label for _, label in TINY]
    assert [r["prediction"] for r in results] == [ABSTAIN, 0, 0, 1, 0, 1]
    assert [r["correct"] for r in results] == [False, True, True, True, False, True]
    for (x0, _), r in zip(TINY, results, strict=True):
        assert r["radius"] <= abs(x0)  # sound: never above the exact radius


def test_certified_accuracy_subset_and_dataset_input():
    kwargs = {"n0": 20, "n": 200, "batch_size": 100, "progress": False}
    by_count = certified_accuracy(
        SignModel(), tiny_tensors(), 0.5, [0.0], subset=3, generator=seeded(), **kwargs
    )
    by_index = certified_accuracy(
        SignModel(),
        TensorDataset(*tiny_tensors()),
        0.5,
        [0.0],
        subset=[0, 2, 4],
        generator=seeded(),
        **kwargs,
    )
    assert [r["index"] for r in by_count["results"]] == [0, 2, 4]
    assert by_count == by_index


def test_certified_accuracy_counts_a_radius_equal_to_the_threshold():
    # A constant classifier certifies exactly certify_from_counts(.., n, n, ..).radius.
    sigma, n, alpha = 0.5, 300, 0.01
    exact = certify_from_counts(0, n, n, sigma, alpha).radius
    inputs, _ = tiny_tensors()
    labels = torch.zeros(len(inputs), dtype=torch.long)
    out = certified_accuracy(
        ConstantModel([2.0, 0.0]),
        (inputs, labels),
        sigma,
        [exact, math.nextafter(exact, math.inf)],
        n0=10,
        n=n,
        alpha=alpha,
        batch_size=100,
        progress=False,
    )
    assert out["certified_accuracy"] == {exact: 1.0, math.nextafter(exact, math.inf): 0.0}


# --- argument errors -------------------------------------------------------------------------

X = point(0.0)
CONST = ConstantModel([1.0, 0.0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: certify_smoothed(CONST, X, 0.0), r"sigma .*got 0\.0"),
        (lambda: certify_smoothed(CONST, X, -1.0), r"sigma .*got -1\.0"),
        (lambda: certify_smoothed(CONST, X, float("nan")), r"sigma .*got nan"),
        (lambda: certify_smoothed(CONST, X, 0.5, n0=0), r"n0 .*got 0"),
        (lambda: certify_smoothed(CONST, X, 0.5, n=0), r"n .*got 0"),
        (lambda: certify_smoothed(CONST, X, 0.5, alpha=0.0), r"alpha .*got 0\.0"),
        (lambda: certify_smoothed(CONST, X, 0.5, alpha=1.0), r"alpha .*got 1\.0"),
        (lambda: certify_smoothed(CONST, X, 0.5, alpha=0.5), r"alpha .*0\.5.*got 0\.5"),
        (lambda: certify_smoothed(CONST, X, 0.5, batch_size=0), r"batch_size .*got 0"),
        (lambda: predict(CONST, X, 0.5, alpha=1.5), r"alpha .*got 1\.5"),
        (lambda: predict(CONST, X, 0.5, num_samples=0), r"num_samples .*got 0"),
        (lambda: sample_counts(CONST, X, 10, 0.5, -3, 2), r"batch_size .*got -3"),
        (lambda: sample_counts(CONST, X, 10, 0.5, 4, 3), r"num_classes=3 .*2 logits"),
        (lambda: sample_counts(CONST, X, 10, 0.5, 4, 1), r"num_classes .*got 1"),
        (
            lambda: certified_accuracy(CONST, tiny_tensors(), 0.5, [-0.1], progress=False),
            r"radii .*got -0\.1",
        ),
        (
            lambda: certified_accuracy(CONST, tiny_tensors(), 0.5, [0.0], subset=[9]),
            r"subset .*\[9\]",
        ),
    ],
)
def test_bad_arguments_name_the_argument(call, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        call()
