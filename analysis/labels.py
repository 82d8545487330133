"""Labels that say where a number comes from and what a trial is.

A certified column ``<split>_cert_acc`` of a trial row holds the final evaluation's
certificate when ``split`` is the trial's ``final_split`` (by ``final_verifier``), else the
last per-epoch one (``eval_split``, by ``eval_verifier``); ``val_final_cert_acc`` holds the
final verifier's certificate of the validation split; epoch rows hold the per-epoch
certificate. Every trial records these settings and the radius ``cert_eps``
(``trainables.results.PROVENANCE_COLUMNS``); rows written before that only have
``test_verifier``. Trials are described by their method and teacher first, then by the
parameters that differ most among the trials shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from trainables.results import FINAL_VAL_CERT, PARAM_PREFIX

__all__ = [
    "axis_label",
    "certificate_source",
    "column_verifiers",
    "describe_trial",
    "key_params",
    "row_verifiers",
]

CERTIFIED = re.compile(rf"(val|test)_cert_acc|{FINAL_VAL_CERT}")
SPLITS = {"val": "validation", "test": "test"}
#: Parameters that say most about a trial, shown first in its label when they are searched.
LEAD_PARAMS = ("method.name", "teacher.name")
MISSING = "–"  # how tables show a value that is not there


def _column(rows: pd.DataFrame, name: str) -> pd.Series:
    return rows[name] if name in rows else pd.Series(pd.NA, index=rows.index, dtype=object)


def row_verifiers(rows: pd.DataFrame, split: str, *, per_epoch: bool = False) -> pd.Series:
    """The verifier behind each row's ``<split>_cert_acc`` (NA where not recorded);
    ``per_epoch``: the one behind the epoch rows' values instead."""
    eval_verifier = _column(rows, "eval_verifier").where(_column(rows, "eval_split") == split)
    if per_epoch:
        return eval_verifier
    final = _column(rows, "final_split") == split
    recorded = _column(rows, "final_verifier").where(final, eval_verifier)
    if split == "test":  # rows from before the provenance columns
        recorded = recorded.where(recorded.notna(), _column(rows, "test_verifier"))
    return recorded


def column_verifiers(rows: pd.DataFrame, column: str, *, per_epoch: bool = False) -> pd.Series:
    """The verifier behind each row's value of the certified ``column`` (see ``CERTIFIED``)."""
    if column == FINAL_VAL_CERT:
        return _column(rows, "final_verifier")
    return row_verifiers(rows, _split(column), per_epoch=per_epoch)


def _split(column: str) -> str:
    return column.split("_", 1)[0]


def _summary(values: pd.Series, fmt: str = "{}") -> str | None:
    """One value, or each value with its count; None when none is recorded."""
    counts = values.dropna().value_counts()
    if counts.empty:
        return None
    if len(counts) == 1:
        return fmt.format(counts.index[0])
    return " / ".join(f"{fmt.format(value)} ({n})" for value, n in counts.items())


def certificate_source(rows: pd.DataFrame, column: str, *, per_epoch: bool = False) -> str | None:
    """``"crown-ibp, eps 0.1, validation split"`` for a certified column (over the rows that
    have a value; several verifiers are counted), None for any other column."""
    if CERTIFIED.fullmatch(column) is None:
        return None
    split = _split(column)
    shown = rows[rows[column].notna()] if column in rows else rows.iloc[:0]
    verifier = _summary(column_verifiers(shown, column, per_epoch=per_epoch))
    eps = _summary(_column(shown, "cert_eps"), "{:g}")
    if verifier is None and eps is None:
        return f"{SPLITS[split]} split; verifier and eps not recorded"
    return (
        f"{verifier or 'verifier not recorded'}, eps {eps or 'not recorded'}, {SPLITS[split]} split"
    )


def axis_label(rows: pd.DataFrame, column: str, *, per_epoch: bool = False) -> str:
    """``column``, with its certificate's source for a certified column."""
    source = certificate_source(rows, column, per_epoch=per_epoch)
    return column if source is None else f"{column}\n({source})"


def key_params(rows: pd.DataFrame, limit: int = 3) -> list[str]:
    """Parameter columns to describe ``rows`` by: method and teacher when searched, then the
    ones that vary most among the rows."""
    columns = [c for c in rows.columns if c.startswith(PARAM_PREFIX) and rows[c].notna().any()]
    lead = [PARAM_PREFIX + name for name in LEAD_PARAMS if PARAM_PREFIX + name in columns]
    distinct = {c: rows[c].astype(str).nunique() for c in columns}
    others = sorted(
        (c for c in columns if c not in lead and distinct[c] > 1), key=lambda c: -distinct[c]
    )
    return [*lead, *others][:limit]


def describe_trial(row: pd.Series, params: Sequence[str]) -> str:
    """``"t001: cc-ibp, teacher pgd-at, optim.lr=0.0031"`` (inactive parameters left out)."""
    parts = []
    for column in params:
        value = row[column]
        if pd.isna(value):
            continue
        name = column[len(PARAM_PREFIX) :]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        if name == "method.name":
            parts.append(shown)
        elif name == "teacher.name":
            parts.append("no teacher" if shown == "none" else f"teacher {shown}")
        else:
            parts.append(f"{name}={shown}")
    return f"{row['trial_id']}: " + ", ".join(parts)
