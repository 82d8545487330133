"""Evidence (not a test): every certificate and attack of the toolbox on digits models.

    python tests/benchmarks/toolbox_evidence.py [--subset 40] [--milp-time-limit 5]
        [--smoothing-n 10000] [--lip-epochs 20]

Trains (``trainables/configs/digits.yaml``: cnn_small, eps 0.1, 20 epochs, seed 0) a
standard, an IBP and a CC-IBP model, a Gaussian-noise model (sigma 0.25) for randomized
smoothing and a 1-Lipschitz ``lip_mlp`` (HKR loss), then evaluates them with
``trainables.certify_checkpoint.certify_or_attack`` on the digits test split (360 images):

* table 1, the full test split: clean, certified by IBP and CROWN, PGD-50 (4 restarts);
* table 2, the first ``--subset`` test images (the same for every column): CROWN, MILP
  (complete; undecided samples count as not certified), PGD, AutoAttack (standard, with the
  accuracy after each attack);
* smoothing: CERTIFY (n0 = 100, alpha = 0.001, ``--smoothing-n`` estimation samples: fewer
  than the 100000 of the evaluation notes, for time) at L2 radii 0.25 / 0.5 / 1.0;
* Lipschitz: certified accuracy at L-inf 0.1 and L2 0.25 / 0.5 / 1.0, with the constant.

Runs single-threaded: the networks are tiny and the CPU is shared (AutoAttack's small
batches run ~15x slower with several threads fighting over two cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from trainables.checkpoint_certification import certify_or_attack
from trainables.config import load_config
from trainables.data import load_dataset
from trainables.training.loop import train

CONFIG = Path(__file__).parents[2] / "trainables" / "configs" / "digits.yaml"
EVAL = {"eval.final_verifier": None, "eval.pgd_steps": 0}  # everything below uses certify_or_attack
MODELS: dict[str, dict[str, Any]] = {
    "standard": {"method.name": "standard"},
    "IBP": {"method.name": "ibp"},
    "CC-IBP": {"method.name": "cc-ibp"},
}
RADII = (0.25, 0.5, 1.0)
EPS = 0.1


def acc(result: dict[str, Any], norm: str = "linf", radius: float = EPS) -> float:
    return next(p["acc"] for p in result["points"] if p["norm"] == norm and p["radius"] == radius)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", type=int, default=40)
    parser.add_argument("--milp-time-limit", type=float, default=5.0)
    parser.add_argument("--smoothing-n", type=int, default=10_000)
    parser.add_argument("--lip-epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = load_dataset("digits").test
    started = time.perf_counter()
    full_rows, subset_rows = [], []
    for label, overrides in MODELS.items():
        model = train(load_config(CONFIG, {**EVAL, **overrides})).model
        full = {m: certify_or_attack(model, test, m, eps=EPS) for m in ("ibp", "crown", "pgd")}
        part = {
            m: certify_or_attack(model, test, m, eps=EPS, subset=args.subset,
                       milp_time_limit=args.milp_time_limit)
            for m in ("crown", "milp", "pgd", "autoattack")
        }  # fmt: skip
        full_rows.append(
            f"| {label} | {full['ibp']['clean_acc']:.3f} | {acc(full['ibp']):.3f}"
            f" | {acc(full['crown']):.3f} | {acc(full['pgd']):.3f} |"
        )
        aa = part["autoattack"]
        per_attack = " / ".join(
            f"{aa[k]:.3f}" for k in ("aa_apgd_ce_acc", "aa_apgd_t_acc", "aa_fab_t_acc")
        )
        subset_rows.append(
            f"| {label} | {part['crown']['clean_acc']:.3f} | {acc(part['crown']):.3f}"
            f" | {acc(part['milp']):.3f} ({part['milp']['milp_undecided']:.3f} undecided,"
            f" {part['milp']['seconds']:.0f} s) | {acc(part['pgd']):.3f} | {per_attack}"
            f" | {acc(aa):.3f} ({aa['seconds']:.0f} s) |"
        )
        print(f"{label}: done after {time.perf_counter() - started:.0f} s", flush=True)

    smooth_model = train(
        load_config(CONFIG, {**EVAL, "method.name": "gaussian", "method.sigma": 0.25})
    ).model
    smoothing = certify_or_attack(
        smooth_model, test, "smoothing", eps=EPS, subset=args.subset * 2, sigma=0.25,
        radii=RADII, smoothing_n=args.smoothing_n,
    )  # fmt: skip
    print(f"smoothing: done after {time.perf_counter() - started:.0f} s", flush=True)

    lip_overrides = {
        **EVAL,
        "model.name": "lip_mlp",
        "model.options": {"width": 128},
        "method.name": "hkr",
        "method.min_margin": 2.0,
        "init": "default",
        "epochs": args.lip_epochs,
        "eval.verifier": "lipschitz",
    }
    lip_model = train(load_config(CONFIG, lip_overrides)).model
    lip = certify_or_attack(lip_model, test, "lipschitz", eps=EPS, radii=RADII)
    lip_pgd = certify_or_attack(lip_model, test, "pgd", eps=EPS)
    print(f"lipschitz: done after {time.perf_counter() - started:.0f} s\n", flush=True)

    print(f"Table 1: digits test split (360 images), L-inf eps = {EPS}")
    print("| model | clean | IBP cert | CROWN cert | PGD-50x4 |\n|---|---|---|---|---|")
    print("\n".join(full_rows))
    print(f"\nTable 2: the first {args.subset} test images, L-inf eps = {EPS}")
    print(
        f"| model | clean | CROWN cert | MILP cert (time limit {args.milp_time_limit:g} s)"
        " | PGD-50x4 | AA after APGD-CE / APGD-T / FAB-T | AutoAttack |"
        "\n|---|---|---|---|---|---|---|"
    )
    print("\n".join(subset_rows))
    points = " | ".join(f"{acc(smoothing, 'l2', r):.3f}" for r in RADII)
    print(
        f"\nRandomized smoothing (cnn_small, Gaussian training sigma 0.25), first"
        f" {smoothing['n']} test images, n0 = 100, n = {args.smoothing_n}, alpha = 0.001:"
        f"\n| base clean | L2 0.25 | L2 0.5 | L2 1.0 | abstained |\n|---|---|---|---|---|"
        f"\n| {smoothing['clean_acc']:.3f} | {points} | {smoothing['smoothing_abstain']:.3f} |"
    )
    l2 = " | ".join(f"{acc(lip, 'l2', r):.3f}" for r in RADII)
    print(
        f"\nLipschitz lip_mlp (width 128, HKR, {args.lip_epochs} epochs), test split, claimed"
        f" L = {lip['lipschitz_constant']:.4f}:"
        "\n| clean | cert L-inf 0.1 | PGD-50x4 L-inf 0.1 | cert L2 0.25 | L2 0.5 | L2 1.0 |"
        f"\n|---|---|---|---|---|---|\n| {lip['clean_acc']:.3f} | {acc(lip):.3f}"
        f" | {acc(lip_pgd):.3f} | {l2} |"
    )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
