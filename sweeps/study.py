"""The sweep's Optuna study: opened or rebuilt at every run, never unpickled from Ray's files.

A sweep's record of its trials is its Parquet rows. Each run of the driver (the first, or a
resume) builds a new Tune experiment whose searcher works on the sweep's study:

- with ``optuna_storage: journal`` (or ``sqlite``), the durable study under the sweep's
  folder, checked first (a journal whose last line a crash cut short is repaired, a copy of
  it kept; any other damage stops the run naming the file), then reconciled with the rows:
  a row the study lacks is added, a trial still RUNNING whose row exists is told its end,
  and a trial that was running when a driver died (RUNNING, no row) is told FAIL and its
  configuration queued again, to resume from its last checkpoint;
- with ``optuna_storage: none``, an in-memory study rebuilt from the rows.

So a resume restores exactly what the rows say, whatever state Ray's own files are in, and
the searcher is never unpickled from them. Each Optuna trial records Tune's ``trial_id``
(and the experiment) as user attributes, so the two can be joined.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

from search_spaces import SearchSpace
from sweeps.config import SweepConfig
from trainables.results import COMPLETED, DIVERGED, FAILED, PRUNED, trial_status
from trainables.tune import RESUME_KEY, worst_value

OPTUNA_FILES = {"journal": "optuna.journal", "sqlite": "optuna.sqlite3"}
#: How a row's status is told to Optuna (a diverged trial ran: its values are the worst).
OPTUNA_STATES = {
    COMPLETED: TrialState.COMPLETE,
    DIVERGED: TrialState.COMPLETE,
    PRUNED: TrialState.PRUNED,
    FAILED: TrialState.FAIL,
}


class StudyDamagedError(RuntimeError):
    """The sweep's durable study cannot be read; the message names the file."""


def repair_journal(path: Path) -> str | None:
    """Check a journal line by line; cut off a last line a crash left unfinished (keeping a
    copy of the file) and say so; ``StudyDamagedError`` for any other damage."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            json.loads(line)
        except ValueError as err:
            raise StudyDamagedError(
                f"{path} is damaged at line {number} ({err}): move it away to rebuild the"
                " study from the sweep's Parquet rows, or start afresh with --fresh"
            ) from None
    if not lines[-1]:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    copy = path.with_name(f"{path.name}.damaged-{stamp}")
    shutil.copy2(path, copy)
    with path.open("r+b") as file:
        file.truncate(len(data) - len(lines[-1]))
    return f"{path}: cut off an unfinished last line ({len(lines[-1])} bytes; copy in {copy})"


def study_storage(sweep: SweepConfig, sweep_dir: str) -> BaseStorage:
    """The study's storage: the durable file under the sweep's (local) folder, or memory."""
    if sweep.optuna_storage == "none":
        return InMemoryStorage()
    path = Path(sweep_dir.removeprefix("file://")) / OPTUNA_FILES[sweep.optuna_storage]
    if sweep.optuna_storage == "sqlite":
        return RDBStorage(f"sqlite:///{path}")
    return JournalStorage(JournalFileBackend(str(path)))


def open_study(sweep: SweepConfig, storage: BaseStorage, where: str) -> optuna.Study:
    """The sweep's study in ``storage`` (created when new), with its metrics named."""
    directions = ["maximize" if o.mode == "max" else "minimize" for o in sweep.objectives]
    try:
        study = optuna.create_study(
            study_name=sweep.name, storage=storage, directions=directions, load_if_exists=True
        )
    except Exception as err:  # any storage error: the file is not a usable study
        raise StudyDamagedError(f"cannot open the Optuna study in {where}: {err}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in sweep.objectives])
    return study


def constraint_values(trial: FrozenTrial) -> list[float]:
    return trial.user_attrs.get("constraints", [0.0])


def constraint_gaps(minimums: Mapping[str, float], values: Mapping[str, Any]) -> list[float]:
    """``min - metric`` per constraint (feasible when <= 0); a missing value is infeasible."""
    gaps = []
    for metric, low in minimums.items():
        value = values.get(metric)
        finite = isinstance(value, int | float) and math.isfinite(value)
        gaps.append(low - float(value) if finite else math.inf)
    return gaps


def minimums(sweep: SweepConfig) -> dict[str, float]:
    return {c.metric: c.min for c in sweep.constraints}


def trial_from_row(row: Mapping[str, Any], space: SearchSpace, sweep: SweepConfig) -> FrozenTrial:
    """The Optuna trial that a Parquet row records (parameters, values, state)."""
    config = {k: v for k, v in json.loads(row["config_json"]).items() if k != RESUME_KEY}
    fixed = optuna.trial.FixedTrial(config)
    space.define_by_run()(fixed)
    state = OPTUNA_STATES[row["status"]]
    values = None
    if state == TrialState.COMPLETE:
        values = []
        for objective in sweep.objectives:
            value = row.get(objective.metric)
            finite = value is not None and not pd.isna(value)
            values.append(float(value) if finite else worst_value(objective.mode))
    user_attrs: dict[str, Any] = {"trial_id": row["trial_id"]}
    if sweep.constraints:
        user_attrs["constraints"] = constraint_gaps(minimums(sweep), row)
    distributions: dict[str, BaseDistribution] = fixed.distributions
    return optuna.trial.create_trial(
        state=state,
        values=values,
        params=fixed.params,
        distributions=distributions,
        user_attrs=user_attrs,
    )


@dataclass
class Reconciled:
    """What ``reconcile`` did to the study: rows added, trials told, configurations re-run."""

    added: int = 0
    told: int = 0
    rerun: int = 0


def reconcile(
    study: optuna.Study, rows: pd.DataFrame, space: SearchSpace, sweep: SweepConfig
) -> Reconciled:
    """Bring the study in line with the rows (see the module docstring)."""
    done = Reconciled()
    trials = study.get_trials(deepcopy=False)
    by_trial_id = {t.user_attrs.get("trial_id"): t for t in trials}
    for row in rows.to_dict("records"):
        trial = by_trial_id.get(row["trial_id"])
        if trial is None:
            study.add_trial(trial_from_row(row, space, sweep))
            done.added += 1
        elif trial.state == TrialState.RUNNING:  # its row was written, its tell was lost
            recorded = trial_from_row(row, space, sweep)
            study.tell(trial.number, recorded.values, state=recorded.state)
            done.told += 1
    queued = {str(t.user_attrs.get("resumes")) for t in trials if "resumes" in t.user_attrs}
    recorded = set(rows["trial_id"])
    for trial in trials:
        trial_id = trial.user_attrs.get("trial_id")
        if trial_id in recorded:
            continue
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)  # its driver died
        elif trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue  # failed attempts and queued trials
        if trial_id is None or trial.user_attrs.get("folder") is None:
            continue
        folders = [trial.user_attrs["folder"], *trial.user_attrs.get("resumes", [])]
        if str(folders) not in queued:  # run its configuration again, from its checkpoint
            study.enqueue_trial(trial.params, user_attrs={"resumes": folders})
            done.rerun += 1
    return done


def build_sampler(sweep: SweepConfig, run: int) -> optuna.samplers.BaseSampler:
    """The configured sampler; run ``k`` of a sweep is seeded ``seed + k - 1``, so a resumed
    run does not draw the first run's random start-up points again."""
    seed = sweep.sampler.seed + run - 1
    constraints = constraint_values if sweep.constraints else None
    name = sweep.sampler.name
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, constraints_func=constraints)
    return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna each trial's status and records how to find it again.

    Ray's OptunaSearch tells Optuna the last result of every finished trial as COMPLETE, so
    a trial stopped after one epoch would enter the front and the sampler with low-budget
    values: the status comes from ``trainables.results.trial_status`` instead (pruned ->
    PRUNED, failed -> FAIL). So a trial stopped early, which never reached the final
    certificate (``val_final_cert_acc``, None in its epoch reports), is PRUNED: no value
    is made up for it, nor taken from the per-epoch verifier. Constraint values
    (``min - metric``, feasible when <= 0) are stored as the user attribute the samplers'
    ``constraints_func`` reads. Each trial gets the user attributes ``trial_id`` (Tune's)
    and ``folder`` (its Tune folder under ``ray/``); a trial queued to re-run a cut-off one
    gets those folders in its config. The searcher keeps no state of its own: ``save``
    writes the trial map as JSON and a resume builds a new searcher on the study
    (``restore`` is refused).
    """

    def __init__(
        self,
        *args: Any,
        total_epochs: int,
        constraints: Mapping[str, float],
        folder_of: Callable[[str, int], str],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.total_epochs, self.constraints = total_epochs, dict(constraints)
        self.folder_of = folder_of

    def number(self, trial_id: str) -> int | None:
        """The Optuna trial number of a Tune trial (None before it was suggested)."""
        trial = self._ot_trials.get(trial_id)
        return None if trial is None else trial.number

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if config is None or trial is None:
            return config
        trial.set_user_attr("trial_id", trial_id)
        trial.set_user_attr("folder", self.folder_of(trial_id, trial.number))
        resumes = trial.user_attrs.get("resumes")
        return {**config, RESUME_KEY: resumes} if resumes else config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        result = result or {}
        status = trial_status(
            errored=error,
            reported=result.get("status"),
            epochs_run=int(result.get("epoch", 0) or 0),
            total_epochs=self.total_epochs,
        )
        trial = self._ot_trials.get(trial_id)
        if trial is not None and self.constraints and status != FAILED:
            trial.set_user_attr("constraints", constraint_gaps(self.constraints, result))
        if status in (COMPLETED, DIVERGED):
            super().on_trial_complete(trial_id, result, False)
        else:
            super().on_trial_complete(trial_id, None, status == FAILED)

    def save(self, checkpoint_path: str) -> None:
        """The trial map as JSON: nothing a resume needs (or unpickles)."""
        numbers = {trial_id: trial.number for trial_id, trial in self._ot_trials.items()}
        Path(checkpoint_path).write_text(json.dumps(numbers))

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("a sweep resumes by building a new searcher on its study")
