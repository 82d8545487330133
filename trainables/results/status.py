"""How a trial ended: the status vocabulary of trial rows and the one rule that decides it.

- ``completed``: ran its whole epoch budget (its objectives are full-budget values);
- ``pruned``: stopped early by a scheduler (low-budget values: kept out of fronts and told
  to Optuna as PRUNED);
- ``diverged``: its loss became non-finite (objectives replaced by their worst values);
- ``failed``: raised an error (after its retries), or hit a configuration error that a retry
  cannot fix.

The trainable's own final report may say ``diverged`` or ``failed``; everything else
follows from the epochs run. The Parquet sink, the Optuna searcher and the study rebuilt on
resume all call ``trial_status``, so they cannot disagree.
"""

from __future__ import annotations

import pandas as pd

COMPLETED, PRUNED, DIVERGED, FAILED = "completed", "pruned", "diverged", "failed"
STATUSES = (COMPLETED, PRUNED, FAILED, DIVERGED)


def trial_status(*, errored: bool, reported: object, epochs_run: int, total_epochs: int) -> str:
    """The status of an ended trial.

    ``errored``: Tune saw the trial raise; ``reported``: the ``status`` of its last report
    (the trainable says ``diverged`` or ``failed`` itself, otherwise ``running`` or
    ``completed``); ``epochs_run`` against ``total_epochs`` tells a pruned trial.
    """
    if errored or reported == FAILED:
        return FAILED
    if reported == DIVERGED:
        return DIVERGED
    return PRUNED if epochs_run < total_epochs else COMPLETED


def full_budget(rows: pd.DataFrame) -> pd.Series:
    """Rows of completed trials that ran their whole budget: the candidates of a front."""
    full = (rows["epochs_run"] >= rows["total_epochs"]).fillna(False).astype(bool)
    return rows["status"].eq(COMPLETED).fillna(False).astype(bool) & full
