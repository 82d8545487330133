"""The driver-side Tune callback that turns each ended trial into Parquet rows.

The rows and their files are the results contract's (``trainables.results``: schema,
statuses, atomic writes); this callback only collects what Tune knows of a trial and hands
it over: its config, its last report, its epochs and whether it raised. It runs in the single
driver process (Tune calls its hooks one after another), so it needs no locking. It keeps,
per running trial, the epochs reported so far: a failed or pruned trial's history comes only
from them; a trial that finished sends its whole history in its final report
(``history_json``, complete across resumes from a checkpoint).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.result import AUTO_RESULT_KEYS

from search_spaces import FloatParam, IntParam, SearchSpace
from search_spaces.space import AnyParam
from trainables.results import FAILED, SweepWriter
from trainables.results.writing import is_number
from trainables.tune import RESUME_KEY

#: Keys Ray adds to every result: bookkeeping, not metrics of the training run.
RAY_KEYS = frozenset(
    {
        *AUTO_RESULT_KEYS,
        "trial_id",
        "done",
        "experiment_tag",
        "experiment_id",
        "should_checkpoint",
        "timesteps_this_iter",
        "episodes_this_iter",
    }
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the actor name in its tracebacks


def param_type(spec: AnyParam) -> pa.DataType:
    """The Arrow type of a parameter column: the Python type of its values.

    Categorical choices keep their type (bool, int64, float64 when ints and floats mix,
    string); only choices of incompatible types fall back to string (non-strings as JSON).
    """
    if isinstance(spec, FloatParam):
        return pa.float64()
    if isinstance(spec, IntParam):
        return pa.int64()
    kinds = {type(choice) for choice in spec.choices if choice is not None}
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def param_types(space: SearchSpace) -> dict[str, pa.DataType]:
    return {key: param_type(spec) for key, spec in space.parameters.items()}


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """The per-epoch part of a result: numeric metrics and ``nan_reason``, minus Ray's keys."""
    return {
        key: value
        for key, value in result.items()
        if key not in RAY_KEYS
        and (is_number(value) or (key == "nan_reason" and isinstance(value, str)))
    }


def _error_text(trial: Trial) -> str:
    """Ray's error file (written on the driver before ``on_trial_error``)."""
    path = trial.error_file
    if path and os.path.isfile(path):
        return _ANSI.sub("", Path(path).read_text(errors="replace")).strip()
    return f"trial {trial.trial_id} errored; Ray wrote no error file"


class ParquetSink(tune.Callback):
    """Writes each ended trial's row and epoch history through ``writer``.

    ``statuses`` maps each trial written so far to its status (for the progress lines).
    """

    def __init__(self, writer: SweepWriter) -> None:
        self.writer = writer
        self.statuses: dict[str, str] = {}
        self._seen: dict[str, dict[int, dict[str, Any]]] = {}

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        """Remember the epoch; a repeated epoch (a retried trial) replaces it.

        A completed trial's final report repeats its last epoch with the trial-level values
        (test metrics, seed, ``history_json``), and a failed trial's last report is no epoch:
        both are read in ``on_trial_complete``, not here.
        """
        epoch = result.get("epoch", result.get("training_iteration"))
        final = "history_json" in result or result.get("status") == FAILED
        if is_number(epoch) and not final:
            self._seen.setdefault(trial.trial_id, {})[int(epoch)] = epoch_metrics(result)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._write(trial, errored=False, error=None)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._write(trial, errored=True, error=_error_text(trial))

    def _write(self, trial: Trial, *, errored: bool, error: str | None) -> None:
        last = dict(trial.last_result or {})
        last.setdefault("wall_time_s", last.get("time_total_s"))
        config = {k: v for k, v in trial.config.items() if k != RESUME_KEY}
        self.statuses[trial.trial_id] = self.writer.write(
            trial.trial_id,
            config=config,
            last=last,
            history=self._history(trial.trial_id, last),
            errored=errored,
            error=error,
        )
        self._seen.pop(trial.trial_id, None)

    def _history(self, trial_id: str, last: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
        """Epoch -> metrics: the trainable's ``history_json`` when present (complete across
        restores), topped up with what only the reports carried (device_hours, ...);
        otherwise the reports seen."""
        seen = self._seen.get(trial_id, {})
        if not isinstance(last.get("history_json"), str):
            return dict(sorted(seen.items()))
        history = {}
        for i, entry in enumerate(json.loads(last["history_json"]), start=1):
            epoch = int(entry.get("epoch", i))
            history[epoch] = {**seen.get(epoch, {}), **epoch_metrics(entry)}
        return dict(sorted(history.items()))
