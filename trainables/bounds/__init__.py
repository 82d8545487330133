"""Sound bound propagation (IBP, CROWN-IBP, CROWN) for the model zoo's Sequential networks.

Written here because auto_LiRPA cannot be installed from the registry for torch 2.x (see
``lirpa.py``); the layer set is the one certified training uses.
"""

from trainables.bounds.api import BACKENDS, METHODS, certify, compute_bounds
from trainables.bounds.lirpa import BackendUnavailableError
from trainables.bounds.ops import SUPPORTED_LAYERS, UnsupportedLayerError
from trainables.bounds.spec import margin_spec

__all__ = [
    "BACKENDS",
    "METHODS",
    "SUPPORTED_LAYERS",
    "BackendUnavailableError",
    "UnsupportedLayerError",
    "certify",
    "compute_bounds",
    "margin_spec",
]
