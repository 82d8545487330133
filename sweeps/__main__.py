"""``python -m sweeps validate FILE`` / ``python -m sweeps run FILE [--storage URI] ...``.

``validate`` checks everything that does not depend on the machine, and warns about what
does (data not on this machine). ``run`` validates first (nothing starts on a bad config;
for a local run, missing data or a device this machine lacks is an error too), checks what
it can before Ray starts (storage, the sweep's lock, its recorded settings), starts a local
Ray unless it runs under ``ray job submit`` or ``RAY_ADDRESS`` names a cluster, and resumes
the sweep if its results folder already holds one (a larger ``--num-trials`` extends it).
Exit codes: 0 when the sweep has a completed trial, 1 when none completed, 2 when it could
not start (bad input: one message). ``--set key=value`` overrides any key of the file
(``sampler.seed=1``, ``training.epochs=3``, ``space.overrides.optim.lr=null``).
"""

from __future__ import annotations

import argparse
import sys

from sweeps import CONFIGS_DIR
from trainables.cli import HelpFormatter, add_set_option, parse_set


def build_parser(prog: str = "python -m sweeps") -> argparse.ArgumentParser:
    """The command line's parser (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {"validate": "check a sweep config, start nothing", "run": "run a sweep"}
    for name, summary in helps.items():
        command = commands.add_parser(
            name, help=summary, description=summary, formatter_class=HelpFormatter
        )
        command.add_argument("config", help=f"sweep YAML (ready ones: {CONFIGS_DIR})")
        command.add_argument("--storage", help="results root (path or URI); overrides the file")
        command.add_argument(
            "--num-trials", type=int, help="overrides num_trials (a larger one extends a sweep)"
        )
        add_set_option(
            command,
            "a sweep key: num_trials=8, sampler.seed=1, training.<training key>,"
            " space.overrides.<parameter>",
        )
    run = commands.choices["run"]
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    run.add_argument(
        "--fresh", action="store_true", help="remove the sweep's results first (says what)"
    )
    run.add_argument("--verbose", action="store_true", help="Ray's and Optuna's own output too")
    run.add_argument(
        "--break-lock",
        action="store_true",
        help="take over the lock of a driver that died (object-store storage only)",
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m sweeps") -> int:
    args = build_parser(prog).parse_args(argv)
    from sweeps.config import SweepConfigError, check_sweep, on_cluster

    try:
        overrides = parse_set(args.set, SweepConfigError)
    except SweepConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.storage:
        overrides["storage"] = args.storage
    if args.num_trials is not None:
        overrides["num_trials"] = args.num_trials
    runs_here = args.command == "run" and not on_cluster()
    try:
        checked = check_sweep(args.config, overrides, runs_here=runs_here)
    except SweepConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sweep = checked.sweep
    if args.command == "validate":
        print(f"{args.config}: valid sweep {sweep.name!r} ({sweep.num_trials} trials)")
        return 0
    from sweeps.driver import START_ERRORS, run_sweep

    try:
        outcome = run_sweep(
            sweep,
            config_source=args.config,
            fresh=args.fresh,
            verbose=args.verbose,
            num_cpus=args.num_cpus,
            break_lock=args.break_lock,
        )
    except START_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not outcome.completed:
        print(
            f"error: no trial of sweep {sweep.name!r} completed ({outcome.trials} ended):"
            f" see the errors in {outcome.results}/trials",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
