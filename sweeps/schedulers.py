"""Multi-objective asynchronous successive halving (MO-ASHA) for Ray Tune.

Ray's schedulers rank trials by one metric, but a sweep trades clean against certified accuracy,
so a trial that is only good in one of them must survive a rung. This scheduler keeps ASHA's
asynchronous stopping rule and replaces "value above the rung's quantile" by a position in a
multi-objective order, as in syne-tune's MOASHA (Salinas et al., "A multi-objective perspective
on jointly tuning hardware and hyperparameters", NAS workshop at ICLR 2021).

Rungs lie at ``grace_period * reduction_factor**k < max_t``. When a trial first reports a
``time_attr`` at or past a rung (the highest such rung), its objective vector is recorded there
and the n trials recorded at that rung (itself included) are ordered by

1. non-dominated sorting rank (``analysis.pareto.pareto_front``; 0 is the rung's front), then
2. NSGA-II crowding distance within the rank, larger first (Deb et al., "A fast and elitist
   multiobjective genetic algorithm: NSGA-II", IEEE TEC 6(2), 2002), normalised by each
   objective's range in that front, so objectives in different units weigh the same.

The trial continues iff fewer than n / reduction_factor recorded trials are strictly ahead of
it, else it is stopped. syne-tune breaks ties inside a front with an epsilon-net seeded at the
best point of the first objective, measuring raw Euclidean distances; crowding distance is used
here because it treats the objectives alike (no seed objective, units normalised), and gives each
objective's extremes an infinite distance: a trial that is strictly best in any single objective
at a rung is on the front and never has anyone ahead of it, so it always continues.

Decisions follow Ray's ``AsyncHyperBandScheduler`` where the two could differ: the first trial
at a rung continues, other trials are compared with those already recorded however few they are
(Ray stops a trial below the cutoff of even one recorded value), ties favour the arriving trial
(Ray stops only when strictly below the cutoff), a decision is never revisited, and a result at
``max_t`` or beyond stops the trial (its budget is spent; that is not early stopping). syne-tune's
code uses the list its non-dominated sort returns (trial indices in sorted order) as if it held
each trial's priority, so the "rank" it tests is the index of whichever trial sorts last; the rule
above is the one its comments describe.

A missing, non-numeric or NaN objective counts as worse than any reported value of that
objective (-inf after orienting all objectives to "larger is better"), so such a trial is
dominated by any trial at least as good in the other objectives.
"""

from __future__ import annotations

import math
import pickle
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from analysis.pareto import pareto_front

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

__all__ = ["MultiObjectiveASHA", "crowding_distance"]

_SIGNS = {"max": 1.0, "min": -1.0}


def crowding_distance(front: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of the points of one front (larger = more isolated).

    Per objective, points at the front's lowest or highest value get infinity and the others the
    gap between the nearest distinct values below and above them, divided by the front's range.
    Using distinct values (rather than neighbours in one sort order) gives duplicate points equal
    distances, so the result does not depend on the order in which trials were recorded.
    Non-finite values are clipped to the finite range: a missing objective sits at the boundary.
    An objective on which all points agree separates nothing and adds 0.
    """
    distance = np.zeros(len(front))
    for column in np.asarray(front, dtype=float).T:
        finite = column[np.isfinite(column)]
        if finite.size == 0 or finite.min() == finite.max():
            continue
        low, high = finite.min(), finite.max()
        values = np.clip(column, low, high)
        levels = np.unique(values)
        position = np.searchsorted(levels, values)
        inner = (position > 0) & (position < len(levels) - 1)
        gap = np.full(len(values), np.inf)
        gap[inner] = (levels[position[inner] + 1] - levels[position[inner] - 1]) / (high - low)
        distance += gap
    return distance


def _ahead_of(points: np.ndarray, candidate: int) -> int:
    """How many points precede ``candidate`` by (front rank, crowding distance); ties do not."""
    ranks = pareto_front(points)["rank"].to_numpy(dtype=np.int64)
    same_front = np.flatnonzero(ranks == ranks[candidate])
    crowding = crowding_distance(points[same_front])
    own = crowding[same_front == candidate][0]
    return int(np.sum(ranks < ranks[candidate]) + np.sum(crowding > own))


def _gain(value: Any, sign: float) -> float:
    """An objective oriented so that larger is better; missing or NaN becomes -inf (worst)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(number) else sign * number


class MultiObjectiveASHA(FIFOScheduler):
    """Asynchronous successive halving that promotes by non-dominated sorting (MO-ASHA).

    Trials run in FIFO order (``choose_trial_to_run`` is FIFOScheduler's, as for Ray's ASHA).
    The objectives are fixed here, not by ``TuneConfig``: put metric/mode only on the searcher.
    ``stopped_early`` tells a driver which trials this scheduler stopped before ``max_t``.
    All state is plain Python and pickles; note that Ray 2.60 pickles the scheduler only into
    ``tuner.pkl`` when an experiment starts and never calls ``save``/``restore`` itself, so after
    ``Tuner.restore`` the rungs start empty, as they do for Ray's own ASHA.
    """

    def __init__(
        self,
        metrics: Sequence[str],
        modes: Sequence[Literal["max", "min"]],
        time_attr: str = "epoch",
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 3,
    ) -> None:
        if isinstance(metrics, str) or isinstance(modes, str):
            raise ValueError("metrics and modes must be lists of strings, one mode per metric")
        if not metrics or len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics must be distinct and non-empty, got {list(metrics)}")
        if len(modes) != len(metrics) or any(m not in _SIGNS for m in modes):
            raise ValueError(f"need one mode 'max' or 'min' per metric, got {list(modes)}")
        if not 0 < grace_period <= max_t:
            raise ValueError(f"need 0 < grace_period <= max_t, got {grace_period}, {max_t}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        super().__init__()
        self._metrics = tuple(metrics)
        self._modes = tuple(modes)
        self._signs = tuple(_SIGNS[m] for m in modes)
        self._time_attr = time_attr
        self._max_t = max_t
        self._reduction_factor = reduction_factor
        levels = []
        level = grace_period
        while level < max_t:
            levels.append(level)
            level *= reduction_factor
        self._levels = tuple(levels)
        # Per rung: trial id -> oriented objective vector. Plain Python, so the state pickles.
        self._recorded: list[dict[str, tuple[float, ...]]] = [{} for _ in levels]
        self._stopped: set[str] = set()

    @property
    def rung_levels(self) -> tuple[float, ...]:
        """Values of ``time_attr`` at which trials are compared, ascending."""
        return self._levels

    def stopped_early(self, trial_id: str) -> bool:
        """Whether this scheduler stopped the trial at a rung (before ``max_t``)."""
        return trial_id in self._stopped

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Accept only an absent metric/mode: the objectives were fixed in the constructor.

        A metric or mode in ``TuneConfig`` would make the searcher single-objective; returning
        False makes Tune raise its "scheduler already has a metric" error instead.
        """
        return metric is None and mode is None

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        """Nothing to set up: there is one bracket and rung entries appear on first arrival."""

    def on_trial_result(
        self, tune_controller: TuneController, trial: Trial, result: Mapping[str, Any]
    ) -> str:
        """Record the trial at a newly reached rung and stop it unless it ranks in the top."""
        time = result.get(self._time_attr)
        if time is None:
            return TrialScheduler.CONTINUE  # no progress value, so no rung to place it on
        if time >= self._max_t:
            return TrialScheduler.STOP
        if self._record(trial.trial_id, time, result):
            return TrialScheduler.CONTINUE
        self._stopped.add(trial.trial_id)
        return TrialScheduler.STOP

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: Mapping[str, Any]
    ) -> None:
        """Record a final result the scheduler has not seen (e.g. a trial ended by a Stopper)."""
        time = result.get(self._time_attr)
        if time is not None and time < self._max_t:
            self._record(trial.trial_id, time, result)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        """Keep its rung entries: they are genuine observations the next arrivals compete with."""

    def _record(self, trial_id: str, time: float, result: Mapping[str, Any]) -> bool:
        """Record at the highest rung reached (once) and say whether the trial may continue.

        Skipped lower rungs stay empty for this trial: filling them with a later, better-trained
        result would be unfair to the trials recorded there. A rung already recorded (a repeated
        or restored epoch) keeps its earlier decision, which was to continue.
        """
        index = bisect_right(self._levels, time) - 1
        if index < 0 or trial_id in self._recorded[index]:
            return True
        rung = self._recorded[index]
        rung[trial_id] = tuple(
            _gain(result.get(m), s) for m, s in zip(self._metrics, self._signs, strict=True)
        )
        points = np.array(list(rung.values()))
        ahead = _ahead_of(points, len(points) - 1)  # dicts keep insertion order: it is last
        return ahead * self._reduction_factor < len(points)

    def debug_string(self) -> str:
        pairs = zip(self._metrics, self._modes, strict=True)
        objectives = ", ".join(f"{metric} ({mode})" for metric, mode in pairs)
        rungs = " | ".join(
            f"{self._time_attr} {level}: {len(recorded)} recorded"
            for level, recorded in zip(self._levels, self._recorded, strict=True)
        )
        return (
            f"Using MultiObjectiveASHA on {objectives}: {len(self._stopped)} stopped early\n"
            f"Rungs: {rungs or 'none'}"
        )

    def save(self, checkpoint_path: str) -> None:
        """Pickle the whole state (rungs, stopped trials) to ``checkpoint_path``."""
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        """Load a state written by ``save``."""
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
