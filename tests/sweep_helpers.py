"""The demo sweep cut down for tests: trials of 2 epochs that take seconds on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sweeps import CONFIGS_DIR


def write_short_demo(
    directory: Path,
    training: dict[str, Any] | None = None,
    space: dict[str, Any] | None = None,
    **top_level: Any,
) -> Path:
    """The demo config with 2-epoch trials and no teacher, plus the given changes, as a file.

    The demo's eps-ramp parameters do not fit 2 epochs: a 1-epoch ramp at epoch 1 is fixed.
    Without distillation (the ``certified`` preset): a test that wants a teacher adds a
    ``teacher.name`` parameter naming its own, cheaper one.
    """
    raw = yaml.safe_load((CONFIGS_DIR / "demo.yaml").read_text())
    raw["training"].update({"epochs": 2, "eval.every": 1, "eps_schedule.length": 1})
    raw["training"].update(training or {})
    raw["space"]["preset"] = "certified"
    overrides = raw["space"]["overrides"]
    del overrides["teacher.name"]
    overrides.update({"eps_schedule.start": None, "eps_schedule.length": None, **(space or {})})
    raw.update(top_level)
    path = directory / "short_demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
