"""``python -m sweeps validate FILE`` / ``python -m sweeps run FILE [--storage URI] ...``.

``validate`` checks everything that does not depend on the machine, and warns about what
does (data not on this machine). ``run`` validates first (nothing starts on a bad config;
for a local run, missing data or a device this machine lacks is an error too), checks what
it can before Ray starts (storage, the sweep's lock, its recorded settings), starts a local
Ray unless it runs under ``ray job submit`` or ``RAY_ADDRESS`` names a cluster, and resumes
the sweep if its results folder already holds one (a larger ``--num-trials`` extends it).
Exit codes: 0 when the sweep has a completed trial, 1 when none completed, 2 when it could
not start (bad input: one message).
"""

from __future__ import annotations

import argparse
import sys

from sweeps.config import CONFIGS_DIR, SweepConfigError, check_sweep, on_cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("validate", "run"):
        command = commands.add_parser(name)
        command.add_argument("config", help=f"sweep YAML (ready ones: {CONFIGS_DIR})")
        command.add_argument("--storage", help="results root (path or URI); overrides the file")
        command.add_argument(
            "--num-trials", type=int, help="overrides num_trials (a larger one extends a sweep)"
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
    args = parser.parse_args(argv)
    overrides = {}
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
