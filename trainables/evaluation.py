"""Clean, PGD (or AutoAttack) and certified accuracy of a model on a dataset split.

Certified accuracy comes only from a sound certificate of ``B(x, eps)`` clipped to [0, 1]:
one of the verifier registry (``trainables.certify.verifiers``: bounds, the ``best``
cascade, the Lipschitz margin, a complete MILP proof). PGD accuracy uses the margin loss
with restarts and keeps the best point found. A sound certificate implies
``cert_acc <= pgd_acc <= clean_acc``; the tests check it. Everything runs in full float32
(no TF32, ``certify.precision``), so the three numbers are of the same network. Under
torch.distributed each rank evaluates every ``world_size``-th example and the counts are
summed, so every rank returns global numbers.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from trainables.attacks.autoattack import AA_COLUMNS, STANDARD_ATTACKS, autoattack_robust
from trainables.attacks.classification import pgd_robust
from trainables.certify.precision import full_float32
from trainables.certify.verifiers import Verifier, make_configured_verifier
from trainables.models.modes import eval_mode

Attack = Literal["pgd", "autoattack"]
ATTACKS: tuple[str, ...] = ("pgd", "autoattack")


class Ranks(Protocol):
    """The part of ``training.distributed.Distributed`` evaluation needs."""

    rank: int
    world_size: int

    def sum(self, values: Tensor) -> Tensor: ...


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    eps: float,
    verifier: str | Verifier | None = "crown-ibp",
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    subset: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    distributed: Ranks | None = None,
    attack: Attack = "pgd",
    milp_time_limit: float = 10.0,
    progress: str | None = None,
) -> dict[str, float]:
    """``{"clean_acc", "pgd_acc", "cert_acc", "n"}``; a metric whose check is off is absent.

    ``subset`` keeps the first N examples (a fixed subset, the same every epoch);
    ``verifier=None`` or ``pgd_steps=0`` skip those checks. ``verifier`` is a registry name
    (built with ``time_limit=milp_time_limit`` and ``seed`` where it takes them) or a
    ``Verifier``; its counters are added as fractions of the samples (``milp_undecided``:
    no verdict within the time limit; ``best``: ``cert_by_<stage>``) and its constants as
    they are (``lipschitz``: ``lipschitz_constant``). ``seed`` fixes PGD's random starts so
    repeated evaluations of the same model agree. ``attack="autoattack"`` reports
    ``autoattack_acc`` and the accuracy after each of its attacks, ``aa_<attack>_acc``
    (``attacks.autoattack``), instead of ``pgd_acc``. ``progress``: a label; a progress bar
    per batch (with its ETA) on stderr under that label.
    """
    if isinstance(verifier, str):
        verifier = _named_verifier(verifier, milp_time_limit, seed)
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    rank, world = (0, 1) if distributed is None else (distributed.rank, distributed.world_size)
    device = torch.device(device)
    size = len(dataset) if subset is None else min(subset, len(dataset))
    shard = Subset(dataset, range(rank, size, world))
    generator = torch.Generator().manual_seed(seed * world + rank)
    keys = ["n", "clean_acc"]
    if attack == "autoattack":
        keys += AA_COLUMNS.values()
    elif pgd_steps > 0:
        keys.append("pgd_acc")
    if verifier is not None:
        keys += ["cert_acc", *verifier.counters()]
    counts = dict.fromkeys(keys, 0.0)
    constants: dict[str, float] = {}
    with full_float32(), eval_mode(model):
        batches = DataLoader(shard, batch_size=batch_size)
        if progress is not None:
            batches = tqdm(batches, desc=progress, unit="batch", leave=False)
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                clean = model(x).argmax(dim=1) == y
            counts["n"] += len(y)
            counts["clean_acc"] += clean.sum().item()
            if attack == "autoattack":
                masks = autoattack_robust(model, x, y, eps, seed=seed, batch_size=batch_size)
                for name, column in AA_COLUMNS.items():
                    counts[column] += masks[name].sum().item()
            elif pgd_steps > 0:
                robust = pgd_robust(
                    model, x, y, eps, steps=pgd_steps, restarts=pgd_restarts, generator=generator
                )
                counts["pgd_acc"] += robust.sum().item()
            if verifier is not None:
                verdicts = verifier.certify(model, x, y, eps)
                counts["cert_acc"] += verdicts.certified.sum().item()
                for name, count in verdicts.counts.items():
                    counts[name] += count
                constants.update(verdicts.constants)
    totals = torch.tensor(list(counts.values()), dtype=torch.float64, device=device)
    if distributed is not None:
        totals = distributed.sum(totals)
    n = totals[0].item()
    metrics = {
        "n": n,
        **{k: v / max(n, 1) for k, v in zip(keys[1:], totals[1:].tolist(), strict=True)},
    }
    if attack == "autoattack":
        metrics["autoattack_acc"] = metrics[AA_COLUMNS[STANDARD_ATTACKS[-1]]]
    return {**metrics, **constants}


def _named_verifier(name: str, time_limit: float, seed: int) -> Verifier:
    """The registry's ``name`` with the run settings it takes (complete ones: both)."""
    return make_configured_verifier(name, {"time_limit": time_limit, "seed": seed})
