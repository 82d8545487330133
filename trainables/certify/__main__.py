"""Command line: certify or attack a trained checkpoint.

    python -m trainables.certify --checkpoint C --method ibp|crown-ibp|crown|milp|smoothing|
        lipschitz|pgd|autoattack [--method ...] --split test [--subset N] [--eps E]
        [--radii 0.25 0.5 1.0] [--sigma S] [--out ROWS.parquet]

The checkpoint is one the training loop wrote (``checkpoint.pt``, or its directory): its
config names the dataset, the model and the eps (``test_eps`` or ``eps``; ``--eps``
overrides). Prints one table row per (method, norm, radius); ``--out`` writes them as
Parquet rows (``trainables.certify.rows``). Smoothing's sigma defaults to the checkpoint's
``method.sigma`` when it was trained with the gaussian method.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from trainables.certify.dispatch import CERTIFY_METHODS, DEFAULT_RADII, certify, load_trained
from trainables.certify.rows import result_rows, write_rows
from trainables.cli import HelpFormatter
from trainables.config import ConfigError
from trainables.data import DatasetNotFoundError
from trainables.training.checkpoint import CheckpointError

COLUMNS = ("method", "norm", "radius", "n", "clean_acc", "cert_acc", "robust_acc", "seconds")


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain text table of the rows' main columns."""
    cells = [[_cell(row.get(column)) for column in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None, prog: str = "python -m trainables.certify") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt, its folder or a URI")
    parser.add_argument(
        "--method", required=True, action="append", choices=CERTIFY_METHODS, help="repeatable"
    )
    parser.add_argument(
        "--split", choices=("val", "test"), default="test", help="the split to certify"
    )
    parser.add_argument("--subset", type=int, help="the first N samples of the split")
    parser.add_argument("--eps", type=float, help="L-inf radius (default: the checkpoint's)")
    parser.add_argument(
        "--radii", type=float, nargs="+", default=list(DEFAULT_RADII), help="L2 radii"
    )
    parser.add_argument("--sigma", type=float, help="smoothing noise level")
    parser.add_argument("--smoothing-n", type=int, default=100_000, help="smoothing samples")
    parser.add_argument("--milp-time-limit", type=float, default=10.0, help="seconds/sample")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", help="write the rows to this Parquet file")
    args = parser.parse_args(argv)
    if args.subset is not None and args.subset < 1:
        parser.error(f"--subset must be >= 1, got {args.subset}")
    try:
        model, config, splits = load_trained(args.checkpoint, args.device)
    except (CheckpointError, ConfigError, DatasetNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sigma = args.sigma
    if sigma is None and config.method.name == "gaussian":
        sigma = config.method.sigma
    dataset = splits.val if args.split == "val" else splits.test
    eps = config.eval_eps if args.eps is None else args.eps
    rows = []
    for method in args.method:
        try:
            result = certify(
                model,
                dataset,
                method,
                eps=eps,
                subset=args.subset,
                radii=args.radii,
                sigma=sigma,
                smoothing_n=args.smoothing_n,
                milp_time_limit=args.milp_time_limit,
                device=args.device,
                seed=config.seed,
                progress=True,
            )
        except (ValueError, ImportError) as err:
            print(f"error: {method}: {err}", file=sys.stderr)
            return 2
        rows += result_rows(result, args.checkpoint, args.split, args.subset)
    print(format_rows(rows))
    if args.out:
        print(f"rows written to {write_rows(rows, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
