"""PGD attacks on classifiers, for adversarial training and for robust-accuracy evaluation.

Convention: the model is in eval mode during the attack (BatchNorm uses its running
statistics, so the attack neither depends on nor changes the batch statistics) and its
previous mode is restored afterwards. Only the input receives gradients: parameter
``.grad`` fields are left untouched. The perturbation set is the L-inf box of radius ``eps``
around ``x`` clipped to the pixel range [0, 1].
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.attacks.pgd import pgd_minimize
from trainables.models.modes import eval_mode

AttackLoss = Literal["ce", "margin", "trades"]


def linf_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``B(x, eps)`` clipped to the pixel range [0, 1]."""
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


def true_class_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per sample: positive iff the prediction is correct."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.amax(dim=1)


def trades_kl(clean_logits: Tensor, adv_logits: Tensor, reduction: str = "batchmean") -> Tensor:
    """``KL(p(x) || p(x_adv))`` summed over classes (Zhang et al. 2019's robust term): the
    TRADES attack's objective here and the TRADES loss's robust term
    (``losses.adversarial``)."""
    return F.kl_div(
        F.log_softmax(adv_logits, dim=1),
        F.log_softmax(clean_logits, dim=1),
        reduction=reduction,
        log_target=True,
    )


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 10,
    restarts: int = 1,
    step_size: float | None = None,
    loss: AttackLoss = "ce",
    generator: torch.Generator | None = None,
) -> Tensor:
    """The best adversarial point found for each sample (see the module docstring).

    ``loss``: "ce" maximises the cross-entropy, "margin" minimises ``true_class_margin``,
    "trades" maximises ``KL(p(x) || p(x_adv))`` (Zhang et al. 2019). ``step_size`` is
    relative to the box half-width (default ``2.5 / steps``).
    """
    lower, upper = linf_box(x.detach(), eps)
    with eval_mode(model):
        if loss == "trades":
            with torch.no_grad():
                clean = model(x).detach()

            def objective(z: Tensor) -> Tensor:
                return -trades_kl(clean, model(z), reduction="none").sum(dim=1)

        elif loss == "margin":

            def objective(z: Tensor) -> Tensor:
                return true_class_margin(model(z), y)

        else:

            def objective(z: Tensor) -> Tensor:
                return -F.cross_entropy(model(z), y, reduction="none")

        x_adv, _ = pgd_minimize(
            objective,
            lower,
            upper,
            steps=steps,
            restarts=restarts,
            step_size=step_size,
            generator=generator,
        )
    return x_adv.detach()


def pgd_robust(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 20,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample mask: correct on ``x`` and on the strongest margin-PGD point found."""
    with torch.no_grad(), eval_mode(model):
        correct = true_class_margin(model(x), y) > 0
    if steps == 0 or eps == 0:
        return correct
    x_adv = pgd_attack(
        model, x, y, eps, steps=steps, restarts=restarts, loss="margin", generator=generator
    )
    with torch.no_grad(), eval_mode(model):
        return correct & (true_class_margin(model(x_adv), y) > 0)
