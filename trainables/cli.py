"""Pieces every command line shares: help that shows defaults, and ``--set key=value``.

Light on purpose (argparse only at import): the ``certsweep`` dispatcher builds each
command's parser without importing torch, Ray or pandas.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with ``(default: X)``, except where there is nothing to say
    (no default, a flag that is off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def add_set_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE`` (repeatable), ``what`` says which keys."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what} (dotted key; the value is YAML: 1e-3, true, [10, 20], null);"
        " repeatable",
    )


def parse_set(pairs: list[str], error: type[Exception]) -> dict[str, Any]:
    """``["optim.lr=1e-3"]`` -> ``{"optim.lr": 0.001}`` (values read as YAML, except that
    ``1e-3`` is a number, which YAML 1.1 reads as a string); ``error`` is raised for a pair
    without ``=`` or a bad value."""
    from trainables.config_io import parse_yaml_value

    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise error(f"--set expects key=value, got {pair!r}")
        value = parse_yaml_value(text, f"--set {key}", error)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        overrides[key] = value
    return overrides
