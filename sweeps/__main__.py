"""``python -m sweeps validate FILE`` / ``python -m sweeps run FILE [--storage URI]``.

``validate`` checks everything that does not depend on the machine, and warns about what
does (data not on this machine). ``run`` validates first (nothing starts on a bad config;
for a local run, missing data or a device this machine lacks is an error too), starts a
local Ray unless it runs under ``ray job submit`` or ``RAY_ADDRESS`` names a cluster, and
resumes the sweep if its results folder already holds one. Bad input: one message, exit 2.
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
        command.add_argument("--num-trials", type=int, help="overrides num_trials")
    run = commands.choices["run"]
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
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
    from sweeps.driver import ensure_ray, run_sweep

    ensure_ray(args.num_cpus)
    run_sweep(sweep, config_source=args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
