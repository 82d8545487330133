"""scikit-learn's 8x8 handwritten digits: a real dataset shipped inside sklearn, no download.

1,797 images with values 0..16. There is no official test split, so 20 % is held out,
stratified by class, with a fixed seed that is independent of ``load_dataset``'s ``seed``:
changing the val seed never changes the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .base import Source
from .in_memory import tensor_source

TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
_MAX_PIXEL = 16.0


def digits_source(root: Path, download: bool, augment: bool) -> Source:
    """Load the digits; ``root``/``download``/``augment`` are unused (in memory, 8x8)."""
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / _MAX_PIXEL
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=TEST_FRACTION,
        stratify=bunch.target,
        random_state=TEST_SPLIT_SEED,
    )
    # Sorted, so the training part keeps sklearn's order and val indices mean the same everywhere.
    train_idx, test_idx = torch.as_tensor(np.sort(train_idx)), torch.as_tensor(np.sort(test_idx))
    return tensor_source(
        "digits",
        train=(images[train_idx], labels[train_idx]),
        test=(images[test_idx], labels[test_idx]),
        num_classes=10,
    )
