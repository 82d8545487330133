"""Hyperparameter importance per objective, with Optuna's evaluators fed from Parquet rows.

The analysis reads only Parquet (never the sweep's Optuna storage), so the trials are rebuilt
as an in-memory study: one ``optuna.trial.create_trial`` per finished trial, with its
``param.*`` values and one objective value per objective.

Distributions. The rows record parameter values, not the search space's specs, so each
parameter's distribution is inferred from the values seen: floats -> ``FloatDistribution``
over [min, max] (log scale when all are > 0 and they span two decades or more), integers ->
``IntDistribution``, booleans and strings -> ``CategoricalDistribution``. Optuna's evaluators
need the same distribution in every trial.

Conditional parameters (inactive, so null, in some trials) would be dropped by Optuna, which
ranks only parameters present in every trial. Instead they are imputed with a value outside
their range: one range width below the minimum (one span below in log space) for numbers,
``None`` for categories; the approach SMAC's random forests take for inactive
hyperparameters. A tree can then split "inactive" off, and the parameter is ranked with the
others. Parameters with a single value among the trials say nothing and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import BaseImportanceEvaluator, FanovaImportanceEvaluator

from analysis.front import finished, objectives_of
from trainables.results import PARAM_PREFIX

__all__ = ["caveat", "param_importances", "study_from_trials"]

LOG_SPAN = 100.0  # max / min at which a positive float parameter is read as log-scaled
#: Fewer finished trials than this: no importances (a forest on a handful of points ranks
#: noise). Fewer than ``FEW_TRIALS``: importances with a caveat (``caveat``).
MIN_TRIALS = 8
FEW_TRIALS = 20


def _distribution(values: pd.Series) -> tuple[BaseDistribution, object] | None:
    """The inferred distribution of one parameter column and the value imputed for inactive
    trials (None when it is active everywhere); None when it has fewer than two values."""
    present = values.dropna()
    if present.nunique() < 2:
        return None
    inactive = len(present) < len(values)
    if pd.api.types.is_bool_dtype(present) or not pd.api.types.is_numeric_dtype(present):
        choices = sorted(present.unique().tolist(), key=str)
        if inactive:
            return CategoricalDistribution([*choices, None]), None
        return CategoricalDistribution(choices), None
    low, high = present.min(), present.max()
    if pd.api.types.is_integer_dtype(present):
        low, high = int(low), int(high)
        below = low - (high - low)
        return IntDistribution(below if inactive else low, high), below if inactive else None
    low, high = float(low), float(high)
    if low > 0 and high / low >= LOG_SPAN:
        below = low * low / high
        return FloatDistribution(below if inactive else low, high, log=True), (
            below if inactive else None
        )
    below = low - (high - low)
    return FloatDistribution(below if inactive else low, high), below if inactive else None


def _plain(value: object) -> object:
    """numpy scalars -> Python values (Optuna compares categorical choices by equality)."""
    return value.item() if isinstance(value, np.generic) else value


def _quiet_study(directions: list[str]) -> optuna.Study:
    """An in-memory study, without Optuna's "new study created" log line for each one."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(directions=directions)
    finally:
        optuna.logging.set_verbosity(verbosity)


def study_from_trials(
    trials: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
) -> optuna.Study:
    """An in-memory study of the finished trials (see the module docstring)."""
    names = objectives_of(trials, objectives)
    done = trials[finished(trials)].dropna(subset=names)
    inferred = {
        column[len(PARAM_PREFIX) :]: spec
        for column in trials.columns
        if column.startswith(PARAM_PREFIX) and (spec := _distribution(done[column])) is not None
    }
    distributions = {name: spec[0] for name, spec in inferred.items()}
    study = _quiet_study(list(directions or ["maximize"] * len(names)))
    for _, row in done.iterrows():
        params = {}
        for name, (_, imputed) in inferred.items():
            value = row[PARAM_PREFIX + name]
            params[name] = imputed if pd.isna(value) else _plain(value)
        study.add_trial(
            optuna.trial.create_trial(
                values=[float(row[name]) for name in names],
                params=params,
                distributions=distributions,
                user_attrs={"trial_id": row["trial_id"]},
            )
        )
    return study


def caveat(trials: int) -> str | None:
    """What importances from ``trials`` finished trials are worth, when that needs saying."""
    if trials < MIN_TRIALS:
        return f"not computed: {trials} finished trial(s), fewer than {MIN_TRIALS}"
    if trials < FEW_TRIALS:
        return (
            f"from only {trials} trials: fANOVA's random forest fits few points, so this"
            " ranking may change with the next trials; read it as a hint"
        )
    return None


def param_importances(
    trials: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    evaluator: BaseImportanceEvaluator | None = None,
    *,
    min_trials: int = MIN_TRIALS,
) -> pd.DataFrame:
    """Importance of each parameter (rows) for each objective (columns), each column summing
    to 1 (all 0 for an objective with one value in every trial: fANOVA has no variance to
    split); empty with fewer than ``min_trials`` (at least 2) finished trials or no varying
    parameter. ``attrs["trials"]`` is the number of finished trials (``caveat`` says what
    importances from so many are worth).

    ``evaluator`` defaults to fANOVA with a fixed seed, so reports are reproducible.
    """
    names = objectives_of(trials, objectives)
    study = study_from_trials(trials, names, directions)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < max(2, min_trials) or not complete[0].distributions:
        empty = pd.DataFrame(columns=names, dtype=float)
        empty.attrs["trials"] = len(complete)
        return empty
    evaluator = evaluator or FanovaImportanceEvaluator(seed=0)
    columns = {}
    for i, name in enumerate(names):
        if len({trial.values[i] for trial in complete}) < 2:  # constant: nothing to explain
            columns[name] = pd.Series(dtype=float)
            continue
        scores = optuna.importance.get_param_importances(
            study, evaluator=evaluator, target=lambda trial, i=i: trial.values[i]
        )
        columns[name] = pd.Series(scores, dtype=float)
    table = pd.DataFrame(columns, columns=names).fillna(0.0)
    order = table.mean(axis=1).sort_values(ascending=False).index
    table = table.loc[order].rename_axis("parameter")
    table.attrs["trials"] = len(complete)
    return table
