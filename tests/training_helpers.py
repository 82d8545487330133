"""Shared digits training settings for the loop's tests (fast on 2 CPU cores)."""

from __future__ import annotations

from typing import Any

#: cnn_small on digits at eps = 0.1: trains in seconds; measured test accuracies are in
#: tests/test_training.py's thresholds.
DIGITS_FAST: dict[str, Any] = {
    "dataset.name": "digits",
    "model.name": "cnn_small",
    "eps": 0.1,
    "epochs": 20,
    "batch_size": 64,
    "optim.lr": 5e-3,
    "optim.milestones": [0.6, 0.8],
    "eps_schedule.start": 2,
    "eps_schedule.length": 8,
    "eval.every": 100,
    "eval.verifier": "ibp",
    "eval.pgd_steps": 10,
    "eval.final_verifier": "crown-ibp",
}


def digits_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``DIGITS_FAST`` with dotted-key overrides."""
    return {**DIGITS_FAST, **(overrides or {})}
