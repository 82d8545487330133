"""What a sweep was started with, and which changes a resumed run may make.

The first run of a sweep records its resolved settings in ``<storage>/<sweep>/sweep.json``:
the sweep's own settings, every training setting with its default filled in, and the
search space with its preset expanded. A later run of the same sweep compares its own
settings with them and refuses any difference that would change what a trial means (its
training, its search space, the objectives, the sampler, the scheduler, the resources),
naming each key with both values. A run may change where and how it runs
(``MAY_CHANGE``, a few training settings in ``MAY_CHANGE_TRAINING``) and may raise
``num_trials``: a larger budget extends the sweep, a smaller one than the trials already
run is refused. ``--fresh`` removes the sweep's results instead (``remove_sweep``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from search_spaces import SearchSpace
from sweeps.config import SweepConfig
from sweeps.trackers import MLFLOW_DB
from trainables.config import flatten
from trainables.results.storage import SweepLocation, exists, write_bytes_atomic

STATE_NAME = "sweep.json"
#: Sweep settings a resumed run may change: where the results go and how it is watched,
#: its pace, its retries; ``num_trials`` may grow.
MAY_CHANGE = (
    "storage",
    "report_every_s",
    "loggers",
    "max_concurrent",
    "max_failures",
    "num_trials",
)
#: Training settings that change where things are, not what a trial computes.
MAY_CHANGE_TRAINING = (
    "dataset.root",
    "dataset.download",
    "num_workers",
    "teacher.cache_dir",
    "checkpoint.every",
)
#: Everything under ``<storage>/<sweep>/`` that a sweep's runs write (``--fresh`` removes).
SWEEP_CONTENTS = (
    "trials",
    "epochs",
    "checkpoints",
    "ray",
    "train",
    "report",
    "recertified",
    "optuna.journal",
    "optuna.sqlite3",
    MLFLOW_DB,
    STATE_NAME,
)


class SweepChangedError(ValueError):
    """A resumed sweep's settings differ from the recorded ones; the message names them."""


def resolved_settings(sweep: SweepConfig, space: SearchSpace) -> dict[str, Any]:
    """The settings that define the sweep's trials, with defaults filled in (JSON values)."""
    training = flatten(sweep.training_config().model_dump(mode="json"))
    return {
        "sweep": sweep.model_dump(mode="json", exclude={"training", "space", *MAY_CHANGE}),
        "training": {k: v for k, v in training.items() if k not in MAY_CHANGE_TRAINING},
        "space": {key: spec.model_dump(mode="json") for key, spec in space.parameters.items()},
    }


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"<section> <key>: <stored> -> <current>"`` for each setting that differs."""
    lines = []
    for section in ("sweep", "training", "space"):
        old, new = stored.get(section, {}), current.get(section, {})
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key, "(absent)") != new.get(key, "(absent)"):
                shown = (json.dumps(side.get(key, "(absent)")) for side in (old, new))
                lines.append(f"{section} {key}: {' -> '.join(shown)}")
    return lines


def read_state(location: SweepLocation) -> dict[str, Any] | None:
    path = f"{location.path}/{STATE_NAME}"
    if not exists(location.filesystem, path):
        return None
    with location.filesystem.open_input_stream(path) as stream:
        try:
            return json.loads(stream.readall())
        except ValueError as err:
            raise SweepChangedError(f"{location.uri}/{STATE_NAME} is damaged: {err}") from None


def check_or_record(
    location: SweepLocation,
    sweep: SweepConfig,
    space: SearchSpace,
    trials_run: int,
    code_version: str,
) -> bool:
    """Record the settings of a new sweep, or check a resumed one against its record;
    returns whether the sweep resumes. ``SweepChangedError`` names what may not change."""
    current = resolved_settings(sweep, space)
    stored = read_state(location)
    if stored is None:
        if trials_run:
            raise SweepChangedError(
                f"{location.uri} holds {trials_run} trial row(s) but no {STATE_NAME} (a sweep"
                " started by an older certsweep?): its settings cannot be checked. Start it"
                " afresh with --fresh, or give this run another sweep name."
            )
        record = {
            **current,
            "num_trials": sweep.num_trials,
            "code_version": code_version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        data = json.dumps(record, indent=2, sort_keys=True).encode()
        write_bytes_atomic(location.filesystem, location.path, STATE_NAME, data)
        return False
    changed = differences(stored, current)
    if sweep.num_trials < trials_run:
        changed.append(f"num_trials: {sweep.num_trials} is fewer than the {trials_run} run")
    if changed:
        raise SweepChangedError(
            f"sweep {sweep.name!r} at {location.uri} was started with other settings;"
            " resuming would mix trials of two sweeps:\n  "
            + "\n  ".join(changed)
            + "\nRestore those settings, start afresh with --fresh (removes its results),"
            " or give the changed sweep another name."
        )
    return True


def remove_sweep(location: SweepLocation) -> list[str]:
    """Delete what the sweep's runs wrote (not its lock); returns what was removed."""
    removed = []
    for name in SWEEP_CONTENTS:
        path = f"{location.path}/{name}"
        info = location.filesystem.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            count = len(location.filesystem.get_file_info(pafs.FileSelector(path, recursive=True)))
            location.filesystem.delete_dir(path)
            removed.append(f"{name}/ ({count} entries)")
        elif info.type == pafs.FileType.File:
            location.filesystem.delete_file(path)
            removed.append(name)
    return removed
