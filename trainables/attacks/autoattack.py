"""Standard AutoAttack (Croce and Hein 2020) through ``pyautoattack``, with per-attack accuracy.

``pyautoattack`` 0.2.0 is the registry's faithful packaging of the reference code (the one
RobustBench uses): APGD-CE, APGD-T, FAB-T and Square, each run on the points that survived
the previous ones. Its ``run_standard_evaluation`` logs the accuracy after each attack but
returns only the adversarial points, so the attacks are run one at a time here with the
standard version's settings, exactly as the library's own ``run_standard_evaluation_individual``
does, but on the survivors: the accuracy after attack k is the cumulative one the reference
reports. Not torchattacks' AutoAttack (fewer iterations, other targets: not the standard).

Slow on a CPU: about a minute per 100 points in the worst case.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainables.attacks.classification import linf_box
from trainables.models.modes import eval_mode

#: The standard version's attacks, in the order they run.
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
#: The metric (and Parquet column) of the accuracy after each attack: ``aa_apgd_ce_acc``, ...
AA_COLUMNS: dict[str, str] = {name: f"aa_{name.replace('-', '_')}_acc" for name in STANDARD_ATTACKS}


def autoattack_robust(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """Per-sample masks ``{"clean": ..., "apgd-ce": ..., ..., "square": ...}``.

    The mask of an attack is True where the sample was correct and no attack up to and
    including it found an adversarial point in ``B(x, eps)`` (L-inf, within [0, 1]); the last
    one is AutoAttack's robust accuracy. With fewer than 10 classes the targeted attacks
    target every other class (the standard setting, 9 targets, needs 10).
    """
    AutoAttack = _pyautoattack()
    device = x.device
    with eval_mode(model):
        attack = AutoAttack(model, eps=eps, norm="Linf", version="standard", seed=seed)
        attack.device = device
        for part in (attack.apgd, attack.apgd_targeted, attack.fab, attack.square):
            part.device = device
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
            robust = model(x).argmax(dim=1) == y
        attack.apgd_targeted.n_target_classes = min(9, classes - 1)
        attack.fab.n_target_classes = min(9, classes - 1)
        masks = {"clean": robust.clone()}
        for name in STANDARD_ATTACKS:
            survivors = robust.nonzero().flatten()
            if len(survivors):
                attack.attacks_to_run = [name]
                x_adv, _ = attack.run_standard_evaluation(
                    x[survivors], y[survivors], batch_size=batch_size
                )
                # A point counts only inside the box (guards against solver tolerance).
                lower, upper = linf_box(x[survivors], eps)
                with torch.no_grad():
                    still = model(torch.min(torch.max(x_adv, lower), upper)).argmax(1)
                robust[survivors] = still == y[survivors]
            masks[name] = robust.clone()
    return masks


def _pyautoattack() -> type:
    try:
        from pyautoattack import AutoAttack
    except ImportError as err:
        raise ImportError(
            "AutoAttack needs pyautoattack: pip install 'certsweep[autoattack]'"
        ) from err
    return AutoAttack
