"""Benchmark (not a test): certified accuracy and cost of every verifier on digits CNNs.

    python tests/benchmarks/bench_certify.py [--methods ibp cc-ibp mtl-ibp sabr]
        [--checkpoint runs/<run>/checkpoint.pt ...] [--subset 100] [--eps 0.1]
        [--time-limit 2] [--no-milp]

Models: one cnn_small per training method, trained here on digits with the test suite's
settings (tests/training_helpers.py: 20 epochs, about 15 s each on 2 CPU cores; the demo
sweep's methods by default), or checkpoints written by the training loop. Each model is
certified on the first ``--subset`` test samples at ``--eps`` by IBP, CROWN-IBP, CROWN,
alpha-CROWN, the registry's ``best`` cascade, branch and bound (``certify.bab``) and the
MILP (``certify.exact``), the two complete verifiers with the same time limit per sample.
Printed per model: certified accuracy (complete verifiers: verified / falsified /
undecided) and seconds per sample, all in one run on the same samples.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))

from training_helpers import digits_config

from trainables.certify.bab import verify_bab
from trainables.certify.exact import verify_exact
from trainables.certify.verifiers import make_verifier
from trainables.checkpoint_certification import load_trained
from trainables.config import load_config
from trainables.training.loop import load_splits, train

BOUNDS = ("ibp", "crown-ibp", "crown", "alpha-crown", "best")  # registry names


def _models(args: argparse.Namespace):
    for checkpoint in args.checkpoint:
        model, config, splits = load_trained(checkpoint)
        yield checkpoint, model, splits.test
    for method in args.methods:
        started = time.perf_counter()
        config = load_config(digits_config({"method.name": method, "seed": args.seed}))
        result = train(config)
        print(f"trained {method} in {time.perf_counter() - started:.0f} s", flush=True)
        yield f"{method} (cnn_small, seed {args.seed})", result.model, load_splits(config).test


def _samples(dataset, subset: int) -> tuple[torch.Tensor, torch.Tensor]:
    count = min(subset, len(dataset))
    xs = torch.stack([dataset[i][0] for i in range(count)])
    ys = torch.tensor([int(dataset[i][1]) for i in range(count)])
    return xs, ys


def _complete(name: str, verdicts, seconds: float, count: int) -> str:
    statuses = [verdict.status for verdict in verdicts]
    verified, falsified = statuses.count("verified"), statuses.count("falsified")
    undecided = count - verified - falsified
    return (
        f"| {name} | {verified / count:.3f} | {verified} / {falsified} / {undecided} | "
        f"{seconds / count:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="*", default=["ibp", "cc-ibp", "mtl-ibp", "sabr"])
    parser.add_argument("--checkpoint", nargs="*", default=[])
    parser.add_argument("--subset", type=int, default=100)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--time-limit", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-milp", action="store_true")
    args = parser.parse_args()
    print(f"eps {args.eps}, first {args.subset} test samples, complete verifiers "
          f"{args.time_limit} s per sample, torch threads {torch.get_num_threads()}")  # fmt: skip
    for name, model, test in _models(args):
        model = model.eval().cpu()
        x, y = _samples(test, args.subset)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
        print(f"\n{name}: clean accuracy {clean:.3f} on {len(x)} samples")
        print("| verifier | certified | verified / falsified / undecided | s per sample |")
        print("|---|---|---|---|")
        for method in BOUNDS:
            started = time.perf_counter()
            certified = make_verifier(method).certify(model, x, y, args.eps).certified
            seconds = time.perf_counter() - started
            print(
                f"| {method} | {certified.float().mean().item():.3f} | | {seconds / len(x):.4f} |",
                flush=True,
            )
        started = time.perf_counter()
        bab = verify_bab(model, x, y, args.eps, time_limit=args.time_limit)
        print(_complete("BaB", bab, time.perf_counter() - started, len(x)), flush=True)
        if not args.no_milp:
            started = time.perf_counter()
            milp = verify_exact(model, x, y, args.eps, time_limit=args.time_limit)
            print(_complete("MILP", milp, time.perf_counter() - started, len(x)), flush=True)
            decided = ("verified", "falsified")
            pairs = [(a.status, b.status) for a, b in zip(bab, milp, strict=True)]
            both = sum(a in decided and b in decided for a, b in pairs)
            contradictions = sum(a in decided and b in decided and a != b for a, b in pairs)
            only_bab = sum(a in decided and b not in decided for a, b in pairs)
            only_milp = sum(b in decided and a not in decided for a, b in pairs)
            print(
                f"decided by both {both} (contradictions: {contradictions}), by BaB only "
                f"{only_bab}, by the MILP only {only_milp}"
            )


if __name__ == "__main__":
    main()
