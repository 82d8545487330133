"""Command line: certify or attack a trained checkpoint (``certsweep certify``).

    python -m trainables.certify_checkpoint --checkpoint C --method best [--method ...]
        --split test [--subset N] [--eps E] [--radii 0.25 0.5 1.0] [--sigma S]
        [--device auto] [--out ROWS.parquet]

The work is ``trainables.checkpoint_certification`` (its docstring lists the methods); this
module is apart on purpose: the parser needs only the methods' names, so ``--help`` answers
without importing torch; the checkpoint, the data and the verifiers load when it runs.
"""

from __future__ import annotations

import argparse
import sys

from trainables.certify.checkpoint_methods import DEFAULT_RADII, METHODS
from trainables.cli import HelpFormatter


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Certify or attack a trained checkpoint: every verifier and attack.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt, its folder or a URI")
    parser.add_argument(
        "--method", required=True, action="append", choices=METHODS, help="repeatable"
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
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N"
    )
    parser.add_argument("--out", help="write the rows to this Parquet file")
    return parser


def main(
    argv: list[str] | None = None, prog: str = "python -m trainables.certify_checkpoint"
) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.subset is not None and args.subset < 1:
        parser.error(f"--subset must be >= 1, got {args.subset}")
    from trainables.certify.rows import result_rows, write_rows
    from trainables.checkpoint_certification import certify_or_attack, format_rows, load_trained
    from trainables.checkpoints import CheckpointError
    from trainables.config import ConfigError
    from trainables.data import DatasetNotFoundError
    from trainables.training.loop import resolve_device

    try:
        device = resolve_device(args.device)
        model, config, splits = load_trained(args.checkpoint, device)
    except (CheckpointError, ConfigError, DatasetNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"certifying on {device}", file=sys.stderr)
    sigma = args.sigma
    if sigma is None and config.method.name == "gaussian":
        sigma = config.method.sigma
    dataset = splits.val if args.split == "val" else splits.test
    eps = config.eval_eps if args.eps is None else args.eps
    rows = []
    for method in args.method:
        try:
            result = certify_or_attack(
                model,
                dataset,
                method,
                eps=eps,
                subset=args.subset,
                radii=args.radii,
                sigma=sigma,
                smoothing_n=args.smoothing_n,
                milp_time_limit=args.milp_time_limit,
                device=device,
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
