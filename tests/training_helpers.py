"""Shared digits training settings for the loop's tests (fast on 2 CPU cores)."""

from __future__ import annotations

from typing import Any

from trainables.teachers.registry import DIGITS_RECIPE

#: The built-in teachers' digits recipe (cnn_small at eps = 0.1, trains in seconds) with cheap
#: evaluation; measured test accuracies are in tests/test_training.py's thresholds.
DIGITS_FAST: dict[str, Any] = {
    **DIGITS_RECIPE,
    "eval.every": 100,
    "eval.verifier": "ibp",
    "eval.pgd_steps": 10,
    "eval.final_verifier": "crown-ibp",
}


def digits_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``DIGITS_FAST`` with dotted-key overrides."""
    return {**DIGITS_FAST, **(overrides or {})}
