"""Clean, PGD (or AutoAttack) and certified accuracy of a model on a dataset split.

Certified accuracy comes only from a sound certificate of ``B(x, eps)`` clipped to [0, 1]:
a bound whose lower bound of every margin is positive (``trainables.bounds.certify``), the
Lipschitz margin (``certify.lipschitz``) or a complete MILP proof (``certify.exact``). PGD
accuracy uses the margin loss with restarts and keeps the best point found. A
sound bound implies ``cert_acc <= pgd_acc <= clean_acc``; the tests check it. Under
torch.distributed each rank evaluates every ``world_size``-th example and the counts are
summed, so every rank returns global numbers.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from trainables.attacks.autoattack import STANDARD_ATTACKS, autoattack_robust
from trainables.attacks.classification import pgd_robust
from trainables.bounds.api import METHODS, Method, certify
from trainables.certify.exact import verify_exact
from trainables.certify.lipschitz import certify_lipschitz, lipschitz_bound
from trainables.models.modes import eval_mode
from trainables.training.distributed import Distributed

Verifier = Method | Literal["lipschitz", "milp"]
Attack = Literal["pgd", "autoattack"]
#: Certificates of the L-inf ball: sound bounds, the Lipschitz margin, complete MILP.
VERIFIERS: tuple[str, ...] = (*METHODS, "lipschitz", "milp")
ATTACKS: tuple[str, ...] = ("pgd", "autoattack")


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    eps: float,
    verifier: Verifier | None = "crown-ibp",
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    subset: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    distributed: Distributed | None = None,
    attack: Attack = "pgd",
    milp_time_limit: float = 10.0,
) -> dict[str, float]:
    """``{"clean_acc", "pgd_acc", "cert_acc", "n"}``; a metric whose check is off is absent.

    ``subset`` keeps the first N examples (a fixed subset, the same every epoch);
    ``verifier=None`` or ``pgd_steps=0`` skip those checks. ``seed`` fixes PGD's random
    starts so repeated evaluations of the same model agree. ``verifier="lipschitz"`` adds
    ``lipschitz_constant``; ``"milp"`` adds ``milp_undecided`` (fraction of samples without a
    verdict in ``milp_time_limit`` seconds: neither certified nor falsified).
    ``attack="autoattack"`` reports ``autoattack_acc`` and the accuracy after each of its
    attacks, ``aa_<attack>_acc`` (``attacks.autoattack``), instead of ``pgd_acc``.
    """
    if verifier is not None and verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier {verifier!r}; choose one of {', '.join(VERIFIERS)}")
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    distributed = distributed or Distributed()
    device = torch.device(device)
    size = len(dataset) if subset is None else min(subset, len(dataset))
    shard = Subset(dataset, range(distributed.rank, size, distributed.world_size))
    generator = torch.Generator().manual_seed(seed * distributed.world_size + distributed.rank)
    keys = ["n", "clean_acc"]
    if attack == "autoattack":
        keys += [f"aa_{name.replace('-', '_')}_acc" for name in STANDARD_ATTACKS]
    elif pgd_steps > 0:
        keys.append("pgd_acc")
    if verifier is not None:
        keys.append("cert_acc")
    if verifier == "milp":
        keys.append("milp_undecided")
    counts = dict.fromkeys(keys, 0.0)
    constant = None
    with eval_mode(model):
        for x, y in DataLoader(shard, batch_size=batch_size):
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                clean = model(x).argmax(dim=1) == y
            counts["n"] += len(y)
            counts["clean_acc"] += clean.sum().item()
            if attack == "autoattack":
                masks = autoattack_robust(model, x, y, eps, seed=seed, batch_size=batch_size)
                for name in STANDARD_ATTACKS:
                    counts[f"aa_{name.replace('-', '_')}_acc"] += masks[name].sum().item()
            elif pgd_steps > 0:
                robust = pgd_robust(
                    model, x, y, eps, steps=pgd_steps, restarts=pgd_restarts, generator=generator
                )
                counts["pgd_acc"] += robust.sum().item()
            if verifier == "lipschitz":
                if constant is None:
                    constant = lipschitz_bound(model, tuple(x.shape[1:]))
                counts["cert_acc"] += certify_lipschitz(model, x, y, eps, constant).sum().item()
            elif verifier == "milp":
                verdicts = verify_exact(model, x, y, eps, time_limit=milp_time_limit, seed=seed)
                statuses = [verdict.status for verdict in verdicts]
                counts["cert_acc"] += statuses.count("verified")
                counts["milp_undecided"] += statuses.count("timeout") + statuses.count("unknown")
            elif verifier is not None:
                counts["cert_acc"] += certify(model, x, y, eps, verifier).sum().item()
    totals = distributed.sum(
        torch.tensor(list(counts.values()), dtype=torch.float64, device=device)
    )
    n = totals[0].item()
    metrics = {
        "n": n,
        **{k: v / max(n, 1) for k, v in zip(keys[1:], totals[1:].tolist(), strict=True)},
    }
    if attack == "autoattack":
        metrics["autoattack_acc"] = metrics[keys[1 + len(STANDARD_ATTACKS)]]
    if constant is not None:
        metrics["lipschitz_constant"] = constant
    return metrics
