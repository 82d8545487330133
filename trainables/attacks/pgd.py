"""Projected gradient descent inside an input box (Madry et al. 2018).

One generic minimiser serves both the classification attack and the soundness tests of
the bounds (which attack each specification row in both directions).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def pgd_minimize(
    objective: Callable[[Tensor], Tensor],
    x_lower: Tensor,
    x_upper: Tensor,
    *,
    steps: int = 20,
    restarts: int = 1,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Minimise a per-sample objective ``[batch] <- [batch, *shape]`` over the box.

    Each restart begins at a uniformly random point of the box and takes signed-gradient
    steps of ``step_size`` times the box half-width per coordinate (default ``2.5 / steps``,
    Madry et al.'s choice), projecting back into the box after each step. The best iterate
    of all restarts is kept per sample (the last one is not always the best).

    Returns ``(x_best, value_best)``.
    """
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got {steps} and {restarts}")
    relative = 2.5 / max(steps, 1) if step_size is None else step_size
    step = relative * (x_upper - x_lower) / 2
    best_x = x_lower.detach().clone()
    best_value = torch.full(x_lower.shape[:1], float("inf"), device=x_lower.device)
    for _ in range(restarts):
        noise = torch.rand(x_lower.shape, generator=generator, dtype=x_lower.dtype)
        x = (x_lower + noise.to(x_lower.device) * (x_upper - x_lower)).detach()
        for iteration in range(steps + 1):
            x.requires_grad_(True)
            value = objective(x)
            better = value.detach() < best_value
            best_value = torch.where(better, value.detach(), best_value)
            best_x[better] = x.detach()[better]
            if iteration == steps:
                break
            (grad,) = torch.autograd.grad(value.sum(), x)
            x = torch.min(torch.max(x.detach() - step * grad.sign(), x_lower), x_upper)
    return best_x, best_value
