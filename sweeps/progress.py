"""What a running sweep shows: trial names, one line per finished trial, a live table, the
front at the end (all within ``WIDTH`` columns).

Trials are named ``<sweep>_<number>_<trial id>`` (the number is the Optuna trial's, as
optuna-dashboard shows it) and so are their folders under ``ray/<experiment>/``. Every
finished trial prints one line with its status, epochs, time and objectives, and the
current front size and hypervolume; every ``report_every_s`` seconds a compact table of the
running trials follows. Ray's own progress output stays quiet unless ``--verbose``.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from ray import tune
from ray.tune.experiment import Trial

from analysis.front import front_members
from analysis.pareto import hypervolume, pareto_front
from sweeps.sink import ParquetSink
from trainables.results import COMPLETED

WIDTH = 100  # columns of every table the driver prints


@dataclass
class TrialNames:
    """Names and folders of a sweep's Tune trials (picklable: Tune pickles its config)."""

    sweep: str
    experiment: str
    searcher: Any = field(repr=False)

    def of(self, trial_id: str, number: int | None) -> str:
        return f"{self.sweep}_{'?' if number is None else number}_{trial_id}"

    def name(self, trial: Trial) -> str:
        return self.of(trial.trial_id, self.searcher.number(trial.trial_id))

    def folder(self, trial_id: str, number: int) -> str:
        """A trial's Tune folder, relative to the sweep's results."""
        return f"ray/{self.experiment}/{self.of(trial_id, number)}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"
    return "-" if value is None else str(value)


def front_summary(points: Sequence[Sequence[float]], modes: Sequence[str]) -> str:
    """``front N, HV x`` of full-budget completed trials (HV only when all are maximised:
    the reference is 0 per objective, the worst accuracy)."""
    if not points:
        return "front 0"
    values = np.asarray(points, dtype=float)
    directions = ["maximize" if m == "max" else "minimize" for m in modes]
    size = int(pareto_front(values, directions=directions)["on_front"].sum())
    if all(m == "max" for m in modes):
        return f"front {size}, HV {hypervolume(values, directions=directions):.4f}"
    return f"front {size}"


class ProgressPrinter(tune.Callback):
    """One line per finished trial and a table of running trials every ``every_s`` seconds.

    Reads each ended trial's status from ``sink`` (place it after the sink); ``previous``:
    the objective values of full-budget completed trials of earlier runs of the sweep.
    """

    def __init__(
        self,
        names: TrialNames,
        objectives: Mapping[str, str],
        *,
        total_trials: int,
        total_epochs: int,
        every_s: float,
        sink: ParquetSink,
        previous: Sequence[Sequence[float]] = (),
        done: int = 0,
        live: Sequence[str] = (),
    ) -> None:
        self.names, self.objectives = names, dict(objectives)
        # the running table's columns: the objectives, then per-epoch stand-ins of those
        # measured only at a trial's end (``val_final_cert_acc`` shows "-" until then)
        self.live = list(dict.fromkeys([*self.objectives, *live]))
        self.total_trials, self.total_epochs, self.every_s = total_trials, total_epochs, every_s
        self.sink, self.points, self.done = sink, [list(p) for p in previous], done
        self.last = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._finished(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._finished(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            running = [t for t in trials if t.status == Trial.RUNNING]
            if running:
                print(self.running_table(running), flush=True)

    def _finished(self, trial: Trial) -> None:
        self.done += 1
        status = self.sink.statuses.get(trial.trial_id, "?")
        last = trial.last_result or {}
        values = [last.get(name) for name in self.objectives]
        if status == COMPLETED and all(isinstance(v, int | float) for v in values):
            self.points.append([float(v) for v in values])
        shown = " ".join(f"{n}={_value(v)}" for n, v in zip(self.objectives, values, strict=True))
        seconds = last.get("wall_time_s", last.get("time_total_s"))
        took = f"{seconds:4.0f}s" if isinstance(seconds, int | float) else "   -s"
        epoch = last.get("epoch", 0)
        summary = front_summary(self.points, list(self.objectives.values()))
        width = len(str(self.total_trials))
        print(
            f"[{self.done:{width}}/{self.total_trials}] {self.names.name(trial)} {status:9}"
            f" {epoch}/{self.total_epochs} {took} {shown} | {summary}",
            flush=True,
        )

    def running_table(self, running: Sequence[Trial]) -> str:
        """The running trials' epoch and last objective values, one line each."""
        header = ["trial", "epoch", *self.live]
        rows = []
        for trial in running:
            last = trial.last_result or {}
            epoch = f"{last.get('epoch', 0)}/{self.total_epochs}"
            rows.append([self.names.name(trial), epoch, *(_value(last.get(n)) for n in self.live)])
        summary = front_summary(self.points, list(self.objectives.values()))
        title = f"{len(running)} running, {self.done}/{self.total_trials} finished; {summary}"
        return title + "\n" + _text_table(header, rows)


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  " + "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def front_text(
    trials: pd.DataFrame,
    objectives: Sequence[str],
    directions: Sequence[str],
    *,
    top: int = 10,
    width: int = WIDTH,
) -> str:
    """The front as a text table within ``width`` columns: trial, objectives, test metrics,
    then the parameters that differ between its members, as many as fit; columns with one
    value on the whole front, and those that did not fit, are named below it (every column
    is in the report)."""
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    done = ", ".join(f"{n} {s}" for s, n in counts.items())
    front = front_members(trials, objectives, directions, varying_only=True)
    header = f"Pareto front: {len(front)} of {len(trials)} trials ({done or 'none finished'})"
    if front.empty:
        return header
    cells = front.head(top).map(_value)
    same = [c for c in cells.columns[1 + len(objectives) :] if cells[c].nunique() == 1]
    kept, used = [], 0
    for column in [c for c in cells.columns if c not in same]:
        column_width = max(len(column), *(len(v) for v in cells[column])) + 2
        if used + column_width > width and kept:
            continue
        kept.append(column)
        used += column_width
    left = [c for c in cells.columns if c not in kept and c not in same]
    lines = [header, _text_table(kept, cells[kept].values.tolist())]
    if len(front) > top:
        lines.append(f"  ... {len(front) - top} more members in the report")
    notes = []
    if same:
        notes.append(f"the same on the front: {', '.join(f'{c}={cells[c].iloc[0]}' for c in same)}")
    if left:
        notes.append(f"not shown (see the report): {', '.join(left)}")
    for note in notes:
        lines.append(textwrap.fill(note, width, initial_indent="  ", subsequent_indent="    "))
    return "\n".join(lines)
