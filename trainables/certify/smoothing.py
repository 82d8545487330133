"""Randomized smoothing certification (Cohen, Rosenfeld and Kolter 2019).

The smoothed classifier ``g(x) = argmax_c P(f(x + eps) = c)``, ``eps ~ N(0, sigma^2 I)``, is
robust within the L2 radius ``sigma * Phi^-1(pA)`` whenever the top class has probability at
least ``pA > 1/2``. ``certify_smoothed`` estimates a lower bound on ``pA`` by Monte Carlo
(CERTIFY in the paper) and ``predict`` evaluates ``g`` with a hypothesis test (PREDICT); both
may abstain.

Own implementation: the reference code (locuslab/smoothing) is not an installable package and
calls ``scipy.stats.binom_test``, removed in SciPy 1.12; here the statistics come from
``scipy.stats.binomtest``. The conventions (n0 = 100, n = 100000, alpha = 0.001) are those of
the project's evaluation notes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import binomtest, norm
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset
from tqdm import tqdm

from trainables.models.modes import eval_mode

#: Prediction returned when the smoothed classifier abstains.
ABSTAIN = -1

#: Noisy copies per forward pass unless told otherwise (the reference code's CIFAR default).
DEFAULT_BATCH_SIZE = 400


@dataclass(frozen=True)
class SmoothingResult:
    """Outcome of ``certify_smoothed`` for one input: the class (or ABSTAIN) and its certified
    L2 radius.

    ``pA_lower`` is reported even on abstention, to show how far from 1/2 the estimate was.
    """

    prediction: int
    radius: float
    pA_lower: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


def sample_counts(
    model: nn.Module,
    x: Tensor,
    num_samples: int,
    sigma: float,
    batch_size: int,
    num_classes: int | None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Votes of the base classifier on ``num_samples`` noisy copies of one input.

    ``x`` is a single input without batch dimension (e.g. ``[C, H, W]``). The noise is drawn
    ``batch_size`` copies at a time, so memory does not grow with ``num_samples``. The model is
    run in eval mode without gradients on ``x``'s device (its training flag is restored after).
    ``num_classes=None`` takes the width of the model's output. ``generator`` (on ``x``'s
    device) makes the noise reproducible. Returns a LongTensor ``[num_classes]`` on the CPU.
    """
    _check_count("num_samples", num_samples)
    _check_sigma(sigma)
    _check_count("batch_size", batch_size)
    if num_classes is not None:
        _check_num_classes(num_classes)
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")

    counts: Tensor | None = None
    remaining = num_samples
    with eval_mode(model), torch.no_grad():
        while remaining > 0:
            size = min(batch_size, remaining)
            remaining -= size
            noise = torch.randn(
                (size, *x.shape), generator=generator, device=x.device, dtype=x.dtype
            )
            logits = model(noise.mul_(sigma).add_(x))
            if logits.ndim != 2 or logits.shape[0] != size:
                raise ValueError(
                    f"model must return logits of shape [batch, classes]; for a batch of {size} "
                    f"it returned {tuple(logits.shape)}"
                )
            if num_classes is None:
                num_classes = logits.shape[1]
                _check_num_classes(num_classes)
            elif logits.shape[1] != num_classes:
                raise ValueError(
                    f"num_classes={num_classes} but the model returns {logits.shape[1]} logits"
                )
            votes = torch.bincount(logits.argmax(dim=1).cpu(), minlength=num_classes)
            counts = votes if counts is None else counts + votes
    assert counts is not None  # num_samples >= 1, so the loop ran
    return counts


def predict_from_counts(counts: Tensor, alpha: float) -> int:
    """PREDICT's decision on given counts: the top class, or ABSTAIN if it may not be the top.

    Two-sided binomial test of the two largest counts at p = 1/2; abstaining when the p-value
    exceeds ``alpha`` bounds the probability of returning a class other than ``g(x)`` by alpha.
    """
    _check_alpha(alpha)
    if counts.ndim != 1 or counts.numel() < 2:
        raise ValueError(f"counts must be 1-D with at least 2 classes, got {tuple(counts.shape)}")
    top = torch.topk(counts, 2)
    count_a, count_b = (int(c) for c in top.values)
    if binomtest(count_a, count_a + count_b, p=0.5).pvalue > alpha:
        return ABSTAIN
    return int(top.indices[0])


def certify_from_counts(
    prediction: int, count: int, n: int, sigma: float, alpha: float
) -> SmoothingResult:
    """CERTIFY's statistics: the radius certified when ``count`` of ``n`` votes go to the class.

    ``pA_lower`` is the one-sided (1 - alpha) Clopper-Pearson lower bound, i.e. the lower end of
    the two-sided exact interval at level 1 - 2 alpha. The radius ``sigma * Phi^-1(pA_lower)``
    holds with probability 1 - alpha; below 1/2 nothing is certified and the result abstains.
    """
    _check_sigma(sigma)
    _check_certify_alpha(alpha)
    _check_count("n", n)
    if not 0 <= count <= n:
        raise ValueError(f"count must be in [0, n={n}], got {count!r}")
    interval = binomtest(count, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    pa_lower = float(interval.low)
    if pa_lower < 0.5:
        return SmoothingResult(prediction=ABSTAIN, radius=0.0, pA_lower=pa_lower)
    return SmoothingResult(
        prediction=prediction, radius=sigma * float(norm.ppf(pa_lower)), pA_lower=pa_lower
    )


def predict(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    num_samples: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """The smoothed classifier's class for one input ``x``, or ABSTAIN (-1) (PREDICT)."""
    _check_alpha(alpha)
    counts = sample_counts(model, x, num_samples, sigma, batch_size, num_classes, generator)
    return predict_from_counts(counts, alpha)


def certify_smoothed(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = DEFAULT_BATCH_SIZE,
    generator: torch.Generator | None = None,
    num_classes: int | None = None,
) -> SmoothingResult:
    """Class and certified L2 radius of the smoothed classifier at one input ``x`` (CERTIFY).

    The class is chosen on ``n0`` samples and its probability estimated on ``n`` fresh ones:
    reusing the selection samples would bias the estimate upwards.
    """
    _check_sigma(sigma)
    _check_count("n0", n0)
    _check_count("n", n)
    _check_certify_alpha(alpha)
    _check_count("batch_size", batch_size)
    selection = sample_counts(model, x, n0, sigma, batch_size, num_classes, generator)
    top_class = int(selection.argmax())
    estimation = sample_counts(model, x, n, sigma, batch_size, selection.numel(), generator)
    return certify_from_counts(top_class, int(estimation[top_class]), n, sigma, alpha)


def certified_accuracy(
    model: nn.Module,
    dataset_or_tensors: Dataset | tuple[Tensor, Tensor],
    sigma: float,
    radii: Sequence[float],
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = DEFAULT_BATCH_SIZE,
    subset: int | Sequence[int] | None = None,
    progress: bool = True,
    *,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Certified accuracy of the smoothed classifier at each L2 radius in ``radii``.

    A sample counts at radius r when ``certify_smoothed`` returns its label with radius >= r (an
    abstention is never correct), so the value at r = 0 is the smoothed classifier's accuracy.
    ``dataset_or_tensors`` yields ``(x, label)`` pairs or is an ``(inputs, labels)`` pair.
    ``subset``: an int k certifies k evenly spaced samples (certification is slow, and datasets
    are often ordered by class), a sequence certifies those indices, None all of them.
    ``device`` defaults to the device of the model's first parameter or buffer (CPU if none);
    ``generator`` must live there.

    Returns ``{"certified_accuracy": {radius: fraction}, "results": [per-sample dict]}`` where
    each per-sample dict has ``index, label, prediction, radius, pA_lower, correct``.
    """
    _check_sigma(sigma)
    _check_count("n0", n0)
    _check_count("n", n)
    _check_certify_alpha(alpha)
    _check_count("batch_size", batch_size)
    radii = [float(r) for r in radii]
    for r in radii:
        if not r >= 0:
            raise ValueError(f"radii must be >= 0, got {r!r}")
    dataset = _as_dataset(dataset_or_tensors)
    indices = _subset_indices(len(dataset), subset)  # type: ignore[arg-type]
    if device is None:
        device = _model_device(model)

    results = []
    for index in tqdm(indices, desc=f"certify sigma={sigma}", disable=not progress):
        x, label = dataset[index]
        label = int(label)
        outcome = certify_smoothed(
            model, x.to(device), sigma, n0, n, alpha, batch_size, generator, num_classes
        )
        results.append(
            {
                "index": index,
                "label": label,
                "prediction": outcome.prediction,
                "radius": outcome.radius,
                "pA_lower": outcome.pA_lower,
                "correct": outcome.prediction == label,
            }
        )
    accuracy = {
        r: sum(res["correct"] and res["radius"] >= r for res in results) / len(results)
        for r in radii
    }
    return {"certified_accuracy": accuracy, "results": results}


def _as_dataset(dataset_or_tensors: Dataset | tuple[Tensor, Tensor]) -> Dataset:
    if not isinstance(dataset_or_tensors, tuple):
        return dataset_or_tensors
    if len(dataset_or_tensors) != 2 or not all(isinstance(t, Tensor) for t in dataset_or_tensors):
        raise ValueError("dataset_or_tensors as a tuple must be (inputs, labels) tensors")
    inputs, labels = dataset_or_tensors
    if inputs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"dataset_or_tensors: {inputs.shape[0]} inputs but {labels.shape[0]} labels"
        )
    return TensorDataset(inputs, labels)


def _subset_indices(size: int, subset: int | Sequence[int] | None) -> list[int]:
    if subset is None:
        indices = list(range(size))
    elif isinstance(subset, numbers.Integral) and not isinstance(subset, bool):
        _check_count("subset", int(subset))
        if subset > size:
            raise ValueError(f"subset={subset} exceeds the dataset size {size}")
        indices = [i * size // int(subset) for i in range(int(subset))]
    else:
        indices = [int(i) for i in subset]  # type: ignore[union-attr]
        bad = [i for i in indices if not 0 <= i < size]
        if bad:
            raise ValueError(f"subset indices out of range for a dataset of {size}: {bad[:5]}")
    if not indices:
        raise ValueError("no samples to certify (empty dataset or subset)")
    return indices


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_num_classes(num_classes: int) -> None:
    """PREDICT compares the two top classes, so there must be two."""
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 2
    ):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def _check_sigma(sigma: float) -> None:
    if not (isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, numbers.Real) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _check_certify_alpha(alpha: float) -> None:
    """CERTIFY reads a two-sided interval at level 1 - 2 alpha, which needs alpha < 1/2."""
    _check_alpha(alpha)
    if alpha >= 0.5:
        raise ValueError(
            f"alpha must be in (0, 0.5) for certification (two-sided level 1 - 2*alpha), "
            f"got {alpha!r}"
        )
