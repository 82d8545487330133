"""Clean, PGD and certified accuracy of a model on a dataset split.

Certified accuracy comes only from a sound bound (``trainables.bounds.certify``): a sample
counts when the lower bound of every margin is positive over ``B(x, eps)`` clipped to
[0, 1]. PGD accuracy uses the margin loss with restarts and keeps the best point found. A
sound bound implies ``cert_acc <= pgd_acc <= clean_acc``; the tests check it. Under
torch.distributed each rank evaluates every ``world_size``-th example and the counts are
summed, so every rank returns global numbers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from trainables.attacks.classification import pgd_robust
from trainables.bounds.api import Method, certify
from trainables.models.modes import eval_mode
from trainables.training.distributed import Distributed


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    eps: float,
    verifier: Method | None = "crown-ibp",
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    subset: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    distributed: Distributed | None = None,
) -> dict[str, float]:
    """``{"clean_acc", "pgd_acc", "cert_acc", "n"}``; a metric whose check is off is absent.

    ``subset`` keeps the first N examples (a fixed subset, the same every epoch);
    ``verifier=None`` or ``pgd_steps=0`` skip those checks. ``seed`` fixes PGD's random
    starts so repeated evaluations of the same model agree.
    """
    distributed = distributed or Distributed()
    device = torch.device(device)
    size = len(dataset) if subset is None else min(subset, len(dataset))
    shard = Subset(dataset, range(distributed.rank, size, distributed.world_size))
    generator = torch.Generator().manual_seed(seed * distributed.world_size + distributed.rank)
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # n, clean, pgd, cert
    with eval_mode(model):
        for x, y in DataLoader(shard, batch_size=batch_size):
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                clean = model(x).argmax(dim=1) == y
            counts[0] += len(y)
            counts[1] += clean.sum()
            if pgd_steps > 0:
                robust = pgd_robust(
                    model, x, y, eps, steps=pgd_steps, restarts=pgd_restarts, generator=generator
                )
                counts[2] += robust.sum()
            if verifier is not None:
                counts[3] += certify(model, x, y, eps, verifier).sum()
    n, clean, pgd, cert = distributed.sum(counts).tolist()
    metrics = {"n": n, "clean_acc": clean / max(n, 1)}
    if pgd_steps > 0:
        metrics["pgd_acc"] = pgd / max(n, 1)
    if verifier is not None:
        metrics["cert_acc"] = cert / max(n, 1)
    return metrics
