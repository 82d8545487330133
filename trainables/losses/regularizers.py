"""Shi et al. (2021)'s warm-up regularisers, computed from IBP pre-activation bounds.

Early in the eps ramp IBP bounds explode and most ReLUs become stable-dead or unbalanced;
two penalties keep the network in a trainable regime until eps reaches its target:

* tightness: ``relu(tau - w0 / w) / tau`` per ReLU layer, where ``w`` is the mean interval
  radius of the layer's pre-activations and ``w0`` that of the (normalised) input box;
* ReLU balance: per layer, with interval centres ``c``, active (``l > 0``) and inactive
  (``u < 0``) masks, the ratios of the active to inactive mean centre and of their summed
  squared deviations from the layer mean, each folded to ``min(r, 1/r)``:
  ``(relu(tau - mean_ratio) + relu(tau - var_ratio)) / tau``. Layers where a ratio is not
  finite (no inactive neuron) contribute 0.

Both are averaged over ReLU layers; the training loop weighs them by
``lambda0 (1 - eps_t / eps_max)`` (``trainables.schedules.warmup_weight``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Interval = tuple[Tensor, Tensor]


def tightness_term(input_box: Interval, relu_inputs: Sequence[Interval], tau: float) -> Tensor:
    """Mean over ReLU layers of ``relu(tau - w0 / w) / tau``."""
    low0, high0 = input_box
    width0 = ((high0 - low0) / 2).mean()
    terms = [
        torch.relu(tau - width0 / ((high - low) / 2).mean().clamp(min=1e-12)) / tau
        for low, high in relu_inputs
    ]
    return torch.stack(terms).mean() if terms else width0.new_zeros(())


def relu_balance_term(relu_inputs: Sequence[Interval], tau: float) -> Tensor:
    """Mean over ReLU layers of the active/inactive balance penalty (see module docstring)."""
    terms = []
    for low, high in relu_inputs:
        centre = (high + low) / 2
        active, inactive = (low > 0).to(centre.dtype), (high < 0).to(centre.dtype)
        mean_ratio = (centre * active).mean() / -(centre * inactive).mean()
        deviation = (centre - centre.mean()) ** 2
        var_ratio = (deviation * active).sum() / (deviation * inactive).sum()
        term = (torch.relu(tau - _fold(mean_ratio)) + torch.relu(tau - _fold(var_ratio))) / tau
        terms.append(term if torch.isfinite(term) else term.new_zeros(()))
    return torch.stack(terms).mean() if terms else torch.zeros(())


def _fold(ratio: Tensor) -> Tensor:
    """``min(r, 1 / r)``: 1 when balanced, towards 0 when either side dominates."""
    return torch.min(ratio, 1 / ratio.clamp(min=1e-12))
