"""SAAD per-sample weights (Lee & Chung 2025) from the teacher's response to the student's x_adv.

The paper's argument: a student-crafted adversarial example teaches most when it also
transfers to the teacher. Three scores, selectable:

* ``entropy`` (the public code's proxy): Renyi entropy (order gamma, 1 = Shannon) of the
  teacher's softmax on x_adv, shifted by the batch minimum: ``w = max(0, s (H - min H))``;
* ``transfer``: ``w = s`` where x_adv changes the teacher's prediction on x, else 0;
* ``margin``: the drop of the teacher's probability margin ``p_y - max_{j != y} p_j`` from x
  to x_adv (in [-2, 2]), clamped at 0: ``w = s max(0, drop)``.

``wbar`` is the min-max normalised copy of ``w`` within the batch (0 when all are equal),
used by the inverse-weighted clean term ``(1 - wbar) KL(T(x) || S(x))``. The weights come
from teacher outputs only and carry no gradient. ``mean_one`` rescales them to mean 1 for
the certified loss, so that they reweight samples without rescaling that loss per batch.

``teacher_kl_attack`` is the public code's inner attack (``saad_inner_loss`` in
HongsinLee/saad ``attacks.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.models.modes import eval_mode

Weighting = Literal["entropy", "transfer", "margin"]


def renyi_entropy(logits: Tensor, gamma: float) -> Tensor:
    """``H_gamma(p) = log(sum_i p_i^gamma) / (1 - gamma)`` of ``softmax(logits)``, per sample.

    ``gamma = 1`` is the Shannon limit. Computed in log space for stability.
    """
    log_p = torch.log_softmax(logits, dim=1)
    if gamma == 1:
        return -(log_p.exp() * log_p).sum(dim=1)
    return torch.logsumexp(gamma * log_p, dim=1) / (1 - gamma)


def probability_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``p_y - max_{j != y} p_j`` per sample."""
    p = torch.softmax(logits, dim=1)
    true = p.gather(1, labels[:, None]).squeeze(1)
    others = p.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
    return true - others


def minmax_normalise(weights: Tensor) -> Tensor:
    """``(w - min w) / (max w - min w)`` over the batch; all zeros when the weights are equal."""
    low, high = weights.min(), weights.max()
    if high <= low:
        return torch.zeros_like(weights)
    return (weights - low) / (high - low)


@torch.no_grad()
def saad_weights(
    weighting: Weighting,
    teacher_adv_logits: Tensor,
    *,
    teacher_clean_logits: Tensor | None = None,
    labels: Tensor | None = None,
    gamma: float = 1.0,
    scale: float = 5.0,
) -> tuple[Tensor, Tensor]:
    """``(w, wbar)`` per sample (see the module docstring), detached.

    ``transfer`` needs ``teacher_clean_logits``; ``margin`` needs them and ``labels``.
    """
    if weighting == "entropy":
        entropy = renyi_entropy(teacher_adv_logits, gamma)
        weights = (scale * (entropy - entropy.min())).clamp(min=0)
    elif teacher_clean_logits is None:
        raise ValueError(f"SAAD weighting {weighting!r} needs the teacher's clean logits")
    elif weighting == "transfer":
        changed = teacher_adv_logits.argmax(dim=1) != teacher_clean_logits.argmax(dim=1)
        weights = scale * changed.to(teacher_adv_logits.dtype)
    else:
        if labels is None:
            raise ValueError("SAAD weighting 'margin' needs the labels")
        drop = probability_margin(teacher_clean_logits, labels) - probability_margin(
            teacher_adv_logits, labels
        )
        weights = scale * drop.clamp(min=0)
    return weights, minmax_normalise(weights)


def mean_one(weights: Tensor) -> Tensor:
    """``w / mean(w)``: mean 1 over the batch; all ones when every weight is 0."""
    mean = weights.mean()
    return torch.ones_like(weights) if mean <= 0 else weights / mean


def linearised_logits(
    clean: Tensor, slope: Tensor, delta: Tensor, y: Tensor, weight: float = 1.0
) -> Tensor:
    """``clean`` with the true-class logit moved by ``weight x slope . delta`` per sample.

    With ``slope = grad_x T_y(x)`` this is the first-order Taylor model of the teacher's
    true-class logit at ``x + delta`` (the other logits stay at their clean values).
    """
    correction = (slope * delta).flatten(1).sum(dim=1)
    rows = torch.arange(len(y), device=y.device)
    return clean.index_put((rows, y), weight * correction, accumulate=True)


def teacher_kl_attack(
    student: nn.Module,
    teacher: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float = 0.25,
    linearisation: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SAAD's inner attack (HongsinLee/saad ``attacks.py``, ``saad_inner_loss``).

    Starts at ``x + 0.001 N(0, 1)`` and takes ``steps`` sign-gradient ascent steps of
    ``step_size x eps`` (the reference: 10 steps of 2/255 at eps 8/255), projected onto
    ``B(x, eps)`` clipped to [0, 1], on ``KL(softmax(z_T) || softmax(S(x')))`` summed over the
    batch, where ``z_T`` is the teacher's clean logits with the true-class logit linearised:
    ``z_T,y += linearisation x grad_x T_y(x) . (x' - x)`` (the gradient flows through that
    correction too, as in the reference). The student runs in eval mode (the project's
    attack convention), the teacher as it is (frozen, eval mode).
    """
    x = x.detach()
    lower, upper = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
    with torch.enable_grad():
        probe = x.clone().requires_grad_(True)
        clean = teacher(probe)
        (slope,) = torch.autograd.grad(clean.gather(1, y[:, None]).sum(), probe)
    clean = clean.detach()
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    x_adv = x + 0.001 * noise
    with torch.enable_grad(), eval_mode(student):
        for _ in range(steps):
            x_adv.requires_grad_(True)
            target = linearised_logits(clean, slope, x_adv - x, y, linearisation)
            kl = F.kl_div(
                F.log_softmax(student(x_adv), dim=1), F.softmax(target, dim=1), reduction="sum"
            )
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = torch.min(
                torch.max(x_adv.detach() + step_size * eps * grad.sign(), lower), upper
            )
    return x_adv.detach()
