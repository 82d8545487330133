"""Model zoo: certifiable students, 1-Lipschitz networks and residual teachers, all named
``nn.Sequential``s."""

from trainables.models.features import feature_names, feature_prefix, forward_features
from trainables.models.layers import Normalize
from trainables.models.resnets import PreActBlock
from trainables.models.zoo import (
    CERTIFIABLE_MODELS,
    LIPSCHITZ_MODELS,
    MODELS,
    build_model,
    build_model_for,
    check_model,
    model_options,
)

__all__ = [
    "CERTIFIABLE_MODELS",
    "LIPSCHITZ_MODELS",
    "MODELS",
    "Normalize",
    "PreActBlock",
    "build_model",
    "build_model_for",
    "check_model",
    "feature_names",
    "feature_prefix",
    "forward_features",
    "model_options",
]
