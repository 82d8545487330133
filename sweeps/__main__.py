"""``python -m sweeps validate FILE`` / ``python -m sweeps run FILE [--storage URI]``.

``run`` validates first (nothing starts on a bad config), starts a local Ray unless it runs
under ``ray job submit`` or ``RAY_ADDRESS`` names a cluster, and resumes the sweep if its
results folder already holds one.
"""

from __future__ import annotations

import argparse
import sys

from sweeps.config import CONFIGS_DIR, SweepConfigError, load_sweep


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
    if args.num_trials:
        overrides["num_trials"] = args.num_trials
    try:
        sweep = load_sweep(args.config, overrides)
    except SweepConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(f"{args.config}: valid sweep {sweep.name!r} ({sweep.num_trials} trials)")
        return 0
    from sweeps.driver import ensure_ray, run_sweep

    ensure_ray(args.num_cpus)
    run_sweep(sweep, config_source=args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
