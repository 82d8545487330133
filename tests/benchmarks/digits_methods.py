"""Evidence (not a test): every training method on digits with the test-suite settings.

    python tests/benchmarks/digits_methods.py [--seeds 0 1 2] [--methods ibp cc-ibp ...]

Prints test-split clean, PGD-10 and CROWN-IBP certified accuracy at eps = 0.1 for each
method (tests/training_helpers.py: cnn_small, 20 epochs), the figures behind the
thresholds in tests/test_training.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from training_helpers import digits_config

from trainables.config import load_config
from trainables.methods import method_names
from trainables.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(method_names()))
    args = parser.parse_args()
    print("| method | seed | clean | PGD-10 | certified (CROWN-IBP) | seconds |")
    print("|---|---|---|---|---|---|")
    for method in args.methods:
        for seed in args.seeds:
            started = time.perf_counter()
            result = train(load_config(digits_config({"method.name": method, "seed": seed})))
            final = result.final
            print(
                f"| {method} | {seed} | {final['test_clean_acc']:.3f} | "
                f"{final['test_pgd_acc']:.3f} | {final['test_cert_acc']:.3f} | "
                f"{time.perf_counter() - started:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
