"""Command line of the analysis.

    python -m analysis report SWEEP [--out DIR] [--objectives A B] [--directions max min]
    python -m analysis recertify SWEEP --verifier best|crown|milp|... [--split test] [--subset N]

SWEEP is ``<storage>/<sweep>``: a local path or a URI (``s3://...``, ``gs://...``).
``report`` prints a markdown summary and writes ``index.html`` (self-contained) and PNGs
(default ``<sweep>/report/``); ``recertify`` writes ``<sweep>/recertified/<verifier>-<split>/``
and the next report shows those numbers next to the search's own.
"""

from __future__ import annotations

import argparse
import sys

from trainables.cli import HelpFormatter

_DIRECTIONS = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}


def build_parser(prog: str = "python -m analysis") -> argparse.ArgumentParser:
    """The command line's parser (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "report": "summary, figures and an HTML page of a sweep",
        "recertify": "certify the front with another verifier",
    }
    report, recertify = (
        commands.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)
        for name, summary in helps.items()
    )
    for command in (report, recertify):
        command.add_argument("sweep", help="<storage>/<sweep>: a local path or a URI")
        command.add_argument("--objectives", nargs="+", help="default: the sweep's own")
        command.add_argument(
            "--directions", nargs="+", choices=sorted(_DIRECTIONS), help="default: all max"
        )
    report.add_argument("--out", help="output folder or URI (default: <sweep>/report)")
    report.add_argument(
        "--reference", nargs="+", type=float, help="hypervolume reference (default: 0 each)"
    )
    recertify.add_argument(
        "--verifier", required=True, help="a registered verifier: best, crown, milp, ..."
    )
    recertify.add_argument(
        "--split", default="test", choices=("test", "val"), help="the split to certify"
    )
    recertify.add_argument("--subset", type=int, help="first N examples of the split")
    recertify.add_argument("--trials", nargs="+", help="trial ids (default: the front)")
    recertify.add_argument(
        "--time-limit", type=float, default=60.0, help="seconds per sample (milp)"
    )
    recertify.add_argument("--batch-size", type=int, default=256, help="examples per batch")
    recertify.add_argument(
        "--overwrite",
        action="store_true",
        help="replace stored results even by a failed or smaller run",
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m analysis") -> int:
    args = build_parser(prog).parse_args(argv)
    from analysis.loading import SchemaVersionError, SweepNotFoundError

    directions = args.directions and [_DIRECTIONS[d] for d in args.directions]
    try:
        if args.command == "report":
            from analysis.report import build_report

            report = build_report(
                args.sweep,
                args.out,
                objectives=args.objectives,
                directions=directions,
                reference=args.reference,
            )
            print(report.markdown)
            print(f"\nreport: {report.html_path}")
        else:
            from analysis.recertify import recertify

            rows = recertify(
                args.sweep,
                args.verifier,
                split=args.split,
                subset=args.subset,
                trial_ids=args.trials,
                objectives=args.objectives,
                directions=directions,
                batch_size=args.batch_size,
                time_limit=args.time_limit,
                overwrite=args.overwrite,
            )
            shown = [
                c
                for c in (
                    "trial_id",
                    "status",
                    "n",
                    "search_verifier",
                    "search_cert_acc",
                    "cert_acc",
                    "clean_acc",
                    "seconds",
                    "written",
                )
                if c in rows
            ]
            print(rows[shown].to_string(index=False) if len(rows) else "no front members")
            failed = int((rows["status"] == "failed").sum()) if len(rows) else 0
            return 1 if failed else 0
    except (SweepNotFoundError, SchemaVersionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
