"""Sweeps: Ray Tune + Optuna over the training loop (``python -m sweeps``, ``certsweep``)."""

from pathlib import Path

#: The ready sweep configs.
CONFIGS_DIR = Path(__file__).parent / "configs"
