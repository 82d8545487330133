"""Certify or attack a trained checkpoint: one entry point for every verifier and attack
(its command line: ``python -m trainables.certify_checkpoint``).

Methods (``certify.checkpoint_methods.METHODS``):

* every verifier of the registry (``trainables.certify.verifiers``): "ibp", "crown-ibp",
  "crown" (sound bounds), "best" (their cascade, recording which stage certified each
  sample), "lipschitz" (the global-constant margin certificate, at ``eps`` (L-inf) and at
  every L2 radius in ``radii``), "milp" (complete, small ReLU networks, with a time limit per
  sample; samples without a verdict count as not certified: ``milp_undecided``);
* "smoothing": randomized smoothing CERTIFY (``certify.smoothing``) at the L2 ``radii``
  (certificates of the smoothed classifier that hold with probability 1 - alpha each);
* "pgd", "autoattack": empirical robust accuracy at ``eps`` (an upper bound of the truth).

Every method sees the same samples: the first ``subset`` of the dataset; every certificate
runs without TF32 (``certify.precision``). The checkpoint is one the training loop wrote
(``checkpoint.pt``, or its directory): its config names the dataset, the model and the eps
(``test_eps`` or ``eps``; ``--eps`` overrides). Prints one table row per (method, norm,
radius); ``--out`` writes them as Parquet rows (``trainables.certify.rows``). Smoothing's
sigma defaults to the checkpoint's ``method.sigma`` when it was trained with the gaussian
method. ``load_trained(checkpoint)`` rebuilds a training checkpoint's model, config and
splits; ``analysis recertify`` uses both functions too.

It stands above the training loop (it reads the loop's checkpoints and data splits), apart
from the verifiers in ``trainables.certify``, which the loop's evaluation uses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from trainables.certify.checkpoint_methods import DEFAULT_RADII, EMPIRICAL, METHODS
from trainables.certify.lipschitz import l2_radius
from trainables.certify.precision import full_float32
from trainables.certify.smoothing import certified_accuracy
from trainables.certify.verifiers import VERIFIERS, stage_fractions
from trainables.checkpoints import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    load_model_state,
)
from trainables.config import TrainConfig, load_config
from trainables.data import DatasetSplits
from trainables.evaluation import evaluate
from trainables.models import build_model_for
from trainables.models.modes import eval_mode
from trainables.training.loop import load_splits

#: Samples per batch of a complete verifier (each takes up to its time limit).
COMPLETE_BATCH = 8
COLUMNS = ("method", "norm", "radius", "n", "clean_acc", "cert_acc", "robust_acc", "seconds")


def certify_or_attack(
    model: nn.Module,
    dataset: Dataset,
    method: str,
    *,
    eps: float,
    subset: int | None = None,
    radii: Sequence[float] = DEFAULT_RADII,
    sigma: float | None = None,
    smoothing_n: int = 100_000,
    smoothing_n0: int = 100,
    smoothing_alpha: float = 0.001,
    pgd_steps: int = 50,
    pgd_restarts: int = 4,
    milp_time_limit: float = 10.0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` with ``method`` (see the module docstring).

    Returns ``{"method", "kind" ("certified" | "empirical"), "n", "clean_acc", "seconds",
    "points": [{"norm": "linf" | "l2", "radius", "acc"}], ...}`` plus method-specific keys:
    ``aa_<attack>_acc`` (autoattack, cumulative after each attack), ``milp_undecided``,
    ``lipschitz_constant``, ``certified_by`` (best: ``{stage: fraction certified}``),
    ``sigma`` (smoothing). ``acc`` is certified accuracy for a certificate and robust
    accuracy for an attack. ``sigma`` is required for smoothing.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if subset is not None:
        dataset = Subset(dataset, range(min(subset, len(dataset))))
    model = model.to(device)
    started = time.perf_counter()
    with full_float32():  # every certificate here, and the attacks on the same network
        if method == "smoothing":
            result = _smoothing(
                model, dataset, sigma, radii, smoothing_n0, smoothing_n, smoothing_alpha,
                batch_size, device, seed, progress,
            )  # fmt: skip
        else:
            result = _at_eps(
                model, dataset, method, eps, pgd_steps, pgd_restarts, milp_time_limit,
                batch_size, device, seed, progress,
            )  # fmt: skip
            if method == "lipschitz":
                result["points"] += _lipschitz_l2(model, dataset, radii, result, batch_size, device)
    result["seconds"] = time.perf_counter() - started
    return {"method": method, "kind": "empirical" if method in EMPIRICAL else "certified", **result}


def load_trained(
    checkpoint: str, device: torch.device | str = "cpu"
) -> tuple[nn.Sequential, TrainConfig, DatasetSplits]:
    """The model of a training checkpoint (eval mode), its config and its dataset splits."""
    if "://" not in checkpoint and Path(checkpoint).is_dir():
        checkpoint = str(Path(checkpoint) / CHECKPOINT_NAME)
    state = load_checkpoint(checkpoint, map_location=device)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(
            f"checkpoint {checkpoint} has no training config or model weights: not written by"
            " the training loop"
        )
    config = load_config(state["config"])
    splits = load_splits(config)
    model = build_model_for(splits.info, config.model.name, config.model.options)
    load_model_state(model, state["model"], f"checkpoint {checkpoint}")
    return model.to(device).eval(), config, splits


def _at_eps(
    model: nn.Module,
    dataset: Dataset,
    method: str,
    eps: float,
    pgd_steps: int,
    pgd_restarts: int,
    milp_time_limit: float,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """The L-inf methods, all through ``evaluate`` (one code path with the training loop).
    A complete verifier gets batches of at most ``COMPLETE_BATCH`` samples, so that its
    progress (seconds per sample) shows."""
    empirical = method in EMPIRICAL
    if not empirical and VERIFIERS[method].complete:
        batch_size = min(batch_size, COMPLETE_BATCH)
    metrics = evaluate(
        model,
        dataset,
        eps=eps,
        verifier=None if empirical else method,
        pgd_steps=pgd_steps if method == "pgd" else 0,
        pgd_restarts=pgd_restarts,
        batch_size=batch_size,
        device=device,
        seed=seed,
        attack="autoattack" if method == "autoattack" else "pgd",
        milp_time_limit=milp_time_limit,
        progress=f"{method} at eps {eps:g}" if progress else None,
    )
    key = {"pgd": "pgd_acc", "autoattack": "autoattack_acc"}.get(method, "cert_acc")
    norm = "linf" if empirical else VERIFIERS[method].norm
    extra = {k: v for k, v in metrics.items() if k not in ("n", "clean_acc", key)}
    by_stage = stage_fractions(metrics)
    return {
        "n": int(metrics["n"]),
        "clean_acc": metrics["clean_acc"],
        "points": [{"norm": norm, "radius": float(eps), "acc": metrics[key]}],
        **extra,
        **({} if by_stage is None else {"certified_by": by_stage}),
    }


def _lipschitz_l2(
    model: nn.Module,
    dataset: Dataset,
    radii: Sequence[float],
    result: dict[str, Any],
    batch_size: int,
    device: torch.device | str,
) -> list[dict[str, Any]]:
    """Certified accuracy at each L2 radius from the constant ``_at_eps`` already computed."""
    constant = result.get("lipschitz_constant")
    if constant is None or not radii:
        return []
    certified = torch.zeros(len(radii), dtype=torch.float64)
    bounds = torch.tensor([float(r) for r in radii], dtype=torch.float64)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    with eval_mode(model):
        for x, y in loader:
            radius = l2_radius(model, x.to(device), y.to(device), constant).double().cpu()
            certified += ((radius[:, None] > bounds) & (radius[:, None] > 0)).sum(dim=0)
    n = max(result["n"], 1)
    return [
        {"norm": "l2", "radius": float(r), "acc": c / n}
        for r, c in zip(radii, certified.tolist(), strict=True)
    ]


def _smoothing(
    model: nn.Module,
    dataset: Dataset,
    sigma: float | None,
    radii: Sequence[float],
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    if sigma is None:
        raise ValueError("smoothing needs sigma (the noise level the model was trained with)")
    generator = torch.Generator(device=device).manual_seed(seed)
    out = certified_accuracy(
        model,
        dataset,
        sigma,
        radii,
        n0=n0,
        n=n,
        alpha=alpha,
        batch_size=batch_size,
        progress=progress,
        generator=generator,
        device=device,
    )
    clean = evaluate(model, dataset, eps=0.0, verifier=None, pgd_steps=0, device=device)
    points = [
        {"norm": "l2", "radius": float(r), "acc": acc}
        for r, acc in out["certified_accuracy"].items()
    ]
    abstained = sum(res["prediction"] < 0 for res in out["results"]) / len(out["results"])
    return {
        "n": len(out["results"]),
        "clean_acc": clean["clean_acc"],
        "points": points,
        "sigma": float(sigma),
        "smoothing_abstain": abstained,
    }


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain text table of the rows' main columns."""
    cells = [[_cell(row.get(column)) for column in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
