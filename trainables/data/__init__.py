"""Dataset registry: ``load_dataset(name)`` -> train / val / test splits in [0, 1] + stats.

Known names are in :data:`DATASETS`. Normalisation is not applied to the data; it belongs
to the model (``DatasetInfo.mean`` / ``std``), so perturbation radii stay in pixel units.
"""

from .base import DatasetInfo, DatasetNotFoundError, DatasetSplits, data_root
from .registry import DATASETS, dataset_options, dataset_shape, find_missing, load_dataset
from .tinyimagenet import prepare_tinyimagenet_val

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSplits",
    "data_root",
    "dataset_options",
    "dataset_shape",
    "find_missing",
    "load_dataset",
    "prepare_tinyimagenet_val",
]
