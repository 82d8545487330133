"""``certsweep``: one command for sweeps, training, certification and analysis.

    certsweep validate SWEEP.yaml [--set key=value ...]   # python -m sweeps validate
    certsweep run SWEEP.yaml [--fresh] [--set ...]        # python -m sweeps run
    certsweep train --config FILE [--set key=value ...]   # python -m trainables.train
    certsweep certify --checkpoint C --method crown ...   # python -m trainables.certify_checkpoint
    certsweep report SWEEP_DIR                            # python -m analysis report
    certsweep recertify SWEEP_DIR --verifier crown        # python -m analysis recertify

The top-level parser knows only the commands' names and summaries and imports none of them:
``certsweep --help`` starts in a fraction of a second. A command's module is imported when
that command is named; each builds its parser before importing anything heavy, so
``certsweep <command> --help`` stays light too (torch, Ray and pandas load when a command
runs). It stands in the top layer: it may import every package, none imports it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib import import_module

from trainables.cli import HelpFormatter


@dataclass(frozen=True)
class Command:
    """Where a command lives: its module's ``main(argv, prog)``; ``named``: that main takes
    the command's name as its first argument (a module with several commands)."""

    module: str
    summary: str
    named: bool = False


COMMANDS = {
    "validate": Command("sweeps.__main__", "check a sweep config; starts nothing", named=True),
    "run": Command("sweeps.__main__", "run, resume or extend a sweep", named=True),
    "train": Command("trainables.train", "one training run, without Ray"),
    "certify": Command("trainables.certify_checkpoint", "certify or attack a trained checkpoint"),
    "report": Command("analysis.__main__", "a sweep's summary, figures and HTML page", named=True),
    "recertify": Command(
        "analysis.__main__", "certify a sweep's front with another verifier", named=True
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the command names and what they do."""
    parser = argparse.ArgumentParser(
        prog="certsweep",
        description="Hyperparameter sweeps for certified adversarial robustness.",
        epilog="certsweep <command> --help shows a command's options.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.summary, add_help=False)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("certsweep")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = build_parser().parse_known_args(argv[:1])  # the command name (or --help)
    command = COMMANDS[args.command]
    rest = [args.command, *argv[1:]] if command.named else argv[1:]
    prog = "certsweep" if command.named else f"certsweep {args.command}"
    return import_module(command.module).main(rest, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
