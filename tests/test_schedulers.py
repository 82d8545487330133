"""MultiObjectiveASHA: rung levels, multi-objective promotion, tie-break, NaN, modes, pickling.

Unit tests feed results by hand to fake trials (only ``trial_id`` is read); one integration test
runs real Ray Tune trials with Optuna's multi-objective searcher and no metric in TuneConfig.
Two objectives "a" and "b" are maximised unless a test says otherwise; grace 1, factor 3,
max_t 9 give rungs at epochs 1 and 3.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from analysis.pareto import pareto_front
from sweeps.schedulers import MultiObjectiveASHA, crowding_distance

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP

# A rung of five: front (0.9, 0.1), (0.1, 0.9), (0.5, 0.5) and two dominated trials.
SPREAD = [(0.9, 0.1), (0.1, 0.9), (0.5, 0.5), (0.2, 0.2), (0.3, 0.1)]


@dataclass(frozen=True)
class FakeTrial:
    trial_id: str


def make(modes: Sequence[str] = ("max", "max"), **kwargs: Any) -> MultiObjectiveASHA:
    return MultiObjectiveASHA(metrics=["a", "b"], modes=list(modes), max_t=9, **kwargs)


def report(scheduler: MultiObjectiveASHA, trial_id: str, epoch: float, **objectives: Any) -> str:
    result = {"epoch": epoch, **objectives}
    return scheduler.on_trial_result(None, FakeTrial(trial_id), result)


def fill(scheduler: MultiObjectiveASHA, points: Sequence[tuple[float, float]]) -> list[str]:
    """Record trials r0, r1, ... at the first rung and return their decisions."""
    return [report(scheduler, f"r{i}", 1, a=a, b=b) for i, (a, b) in enumerate(points)]


# ---------------------------------------------------------------- rungs and bookkeeping


@pytest.mark.parametrize(
    ("grace", "factor", "max_t", "levels"),
    [
        (1, 3, 9, (1, 3)),  # strictly below max_t: a trial at max_t stops anyway
        (1, 3, 10, (1, 3, 9)),
        (1, 3, 27, (1, 3, 9)),
        (2, 2, 16, (2, 4, 8)),
        (1, 1.5, 3, (1, 1.5, 2.25)),
        (5, 3, 5, ()),
    ],
)
def test_rung_levels(grace: float, factor: float, max_t: float, levels: tuple) -> None:
    scheduler = MultiObjectiveASHA(
        ["a", "b"], ["max", "max"], max_t=max_t, grace_period=grace, reduction_factor=factor
    )
    assert scheduler.rung_levels == pytest.approx(levels)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"metrics": "a", "modes": ["max"]},
        {"metrics": ["a", "a"], "modes": ["max", "max"]},
        {"metrics": ["a", "b"], "modes": ["max"]},
        {"metrics": ["a", "b"], "modes": ["max", "maximize"]},
        {"metrics": ["a"], "modes": ["max"], "grace_period": 10, "max_t": 9},
        {"metrics": ["a"], "modes": ["max"], "reduction_factor": 1},
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MultiObjectiveASHA(**kwargs)


def test_records_once_per_rung_and_stops_at_max_t() -> None:
    scheduler = make()
    decisions = [report(scheduler, "t", epoch, a=0.1, b=0.1) for epoch in range(1, 10)]
    assert decisions == [CONTINUE] * 8 + [STOP]  # alone at each rung; max_t ends the budget
    assert not scheduler.stopped_early("t")
    assert "epoch 1: 1 recorded | epoch 3: 1 recorded" in scheduler.debug_string()
    # A repeated epoch (a restored trial) and a result without the time attribute decide nothing.
    assert report(scheduler, "t", 1, a=0.0, b=0.0) == CONTINUE
    assert scheduler.on_trial_result(None, FakeTrial("t"), {"a": 0.0, "b": 0.0}) == CONTINUE
    assert "epoch 1: 1 recorded" in scheduler.debug_string()


def test_result_past_a_rung_is_recorded_at_the_highest_rung_only() -> None:
    scheduler = make()
    report(scheduler, "late", 4, a=0.5, b=0.5)
    assert "epoch 1: 0 recorded | epoch 3: 1 recorded" in scheduler.debug_string()


def test_on_trial_complete_records_a_result_the_scheduler_never_saw() -> None:
    # A Tune Stopper ends a trial without asking the scheduler; its last result still counts.
    scheduler = make()
    scheduler.on_trial_complete(None, FakeTrial("x"), {"epoch": 1, "a": 0.5, "b": 0.5})
    assert report(scheduler, "y", 1, a=0.4, b=0.4) == STOP  # dominated by x; 1 * 3 >= 2
    assert scheduler.stopped_early("y")
    assert not scheduler.stopped_early("x")


# ---------------------------------------------------------------- promotion rule


def test_dominated_trial_at_full_rung_is_stopped() -> None:
    scheduler = make()
    fill(scheduler, SPREAD)
    # Dominated by (0.5, 0.5): rank 1, behind the three front trials; 3 * 3 >= 6 recorded.
    assert report(scheduler, "new", 1, a=0.4, b=0.4) == STOP
    assert scheduler.stopped_early("new")


def test_non_dominated_trials_continue() -> None:
    scheduler = make()
    fill(scheduler, [(0.5, 0.5), (0.2, 0.2), (0.3, 0.1), (0.1, 0.3), (0.4, 0.4)])
    assert report(scheduler, "better", 1, a=0.6, b=0.6) == CONTINUE  # dominates all
    # Trades a for b against the front: both front members are extremes, nobody is ahead.
    assert report(scheduler, "trade", 1, a=0.45, b=0.7) == CONTINUE
    assert not scheduler.stopped_early("better")
    assert not scheduler.stopped_early("trade")


@pytest.mark.parametrize(("a", "b"), [(0.95, 0.01), (0.01, 0.95)])
def test_best_in_one_objective_only_is_kept(a: float, b: float) -> None:
    # Worse than every recorded trial in one objective, best in the other: on the front with an
    # infinite crowding distance. A single-objective ASHA on the weak objective would stop it.
    scheduler = make()
    fill(scheduler, [*SPREAD, (0.7, 0.3), (0.3, 0.7), (0.45, 0.45)])
    assert report(scheduler, "specialist", 1, a=a, b=b) == CONTINUE
    assert not scheduler.stopped_early("specialist")


def test_crowding_distance_breaks_ties_inside_the_front() -> None:
    # Eight recorded: front (0, 10), (1, 9), (10, 0) and five dominated; the ninth may continue
    # iff fewer than 9 / 3 = 3 trials are ahead. Both candidates are on the front.
    recorded = [(0, 10), (1, 9), (10, 0), (0.5, 0.5), (1, 1), (1.5, 1.5), (0.2, 0.2), (0.3, 0.3)]
    sparse, crowded = make(), make()
    fill(sparse, recorded)
    fill(crowded, recorded)
    # (6, 4) lies in the front's big gap (distance 1.8 > 1.2 of (1, 9)): only the 2 extremes
    # are ahead. (0.5, 9.5) squeezes between (0, 10) and (1, 9) (0.2 < 1.9): 3 are ahead.
    assert report(sparse, "sparse", 1, a=6, b=4) == CONTINUE
    assert report(crowded, "crowded", 1, a=0.5, b=9.5) == STOP


def test_ties_favour_the_arriving_trial() -> None:
    # As in Ray's ASHA (stop only when strictly below the cutoff): a duplicate of the best
    # recorded point continues, a marginally worse one does not.
    tie, worse = make(), make()
    fill(tie, [(0.5, 0.5), (0.2, 0.2)])
    fill(worse, [(0.5, 0.5), (0.2, 0.2)])
    assert report(tie, "tie", 1, a=0.5, b=0.5) == CONTINUE
    assert report(worse, "worse", 1, a=0.49, b=0.5) == STOP


def test_with_few_recorded_trials_only_an_unbeaten_trial_continues() -> None:
    scheduler = make()
    assert fill(scheduler, [(0.5, 0.5), (0.4, 0.4), (0.6, 0.6)]) == [CONTINUE, STOP, CONTINUE]


def test_crowding_distance_values() -> None:
    front = np.array([(0, 10), (1, 9), (6, 4), (10, 0)], dtype=float)
    # (1, 9): gaps 6/10 in a and 6/10 in b; (6, 4): 9/10 and 9/10; extremes: infinite.
    np.testing.assert_allclose(crowding_distance(front), [np.inf, 1.2, 1.8, np.inf])
    # Duplicates get equal distances, whatever the order of the points.
    duplicates = np.array([(5, 5), (0, 10), (5, 5), (10, 0)], dtype=float)
    np.testing.assert_allclose(crowding_distance(duplicates), [2.0, np.inf, 2.0, np.inf])
    np.testing.assert_allclose(crowding_distance(duplicates[::-1]), [np.inf, 2.0, np.inf, 2.0])
    # An objective on which all agree adds nothing; -inf (missing) is clipped, never NaN.
    np.testing.assert_allclose(crowding_distance(np.array([(1.0, 2.0), (1.0, 2.0)])), [0, 0])
    with_missing = crowding_distance(np.array([(-np.inf, 1.0), (0.5, 0.5), (1.0, 0.0)]))
    assert not np.isnan(with_missing).any()


# ---------------------------------------------------------------- NaN and modes


@pytest.mark.parametrize("bad", [math.nan, None, "n/a", "missing"])
def test_missing_or_nan_objective_counts_as_worst(bad: Any) -> None:
    def bad_a(b: float) -> dict[str, Any]:
        return {"b": b} if bad == "missing" else {"a": bad, "b": b}

    scheduler = make()
    assert report(scheduler, "first", 1, **bad_a(0.1)) == CONTINUE  # alone at the rung
    fill(scheduler, SPREAD)
    # a worse than any reported a, b tied with (0.5, 0.5): dominated, behind the 3-trial front.
    assert report(scheduler, "dominated", 1, **bad_a(0.5)) == STOP
    # Worst only in a: the best b still puts it on the front with an infinite distance.
    assert report(scheduler, "best_b", 1, **bad_a(0.99)) == CONTINUE
    # Later trials are still ranked normally against the -inf entries.
    assert report(scheduler, "good", 1, a=0.95, b=0.95) == CONTINUE
    assert report(scheduler, "poor", 1, a=0.05, b=0.05) == STOP


def test_max_and_min_modes_reverse_the_decision() -> None:
    maximise, minimise = make(("max", "max")), make(("min", "min"))
    fill(maximise, [(1, 1), (2, 2)])
    fill(minimise, [(1, 1), (2, 2)])
    assert report(maximise, "x", 1, a=3, b=3) == CONTINUE
    assert report(minimise, "x", 1, a=3, b=3) == STOP


def test_mixed_modes() -> None:
    # Maximise accuracy a, minimise loss b: (0.9, 0.1) dominates (0.5, 0.5) here.
    scheduler = make(("max", "min"))
    fill(scheduler, [(0.9, 0.1), (0.2, 0.2)])
    assert report(scheduler, "low_acc_high_loss", 1, a=0.5, b=0.5) == STOP
    assert report(scheduler, "high_acc_low_loss", 1, a=0.95, b=0.05) == CONTINUE


# ---------------------------------------------------------------- Tune interface and state


def test_search_properties_never_replace_the_objectives() -> None:
    scheduler = make()
    assert scheduler.set_search_properties(None, None)
    assert not scheduler.set_search_properties("a", "max")  # Tune then raises a clear error
    assert scheduler.metric is None  # Tune's strict metric check asks the scheduler for nothing
    fill(scheduler, SPREAD)
    assert report(scheduler, "new", 1, a=0.4, b=0.4) == STOP  # still ranked on a and b


def test_pickle_and_save_restore_keep_rung_state(tmp_path: Path) -> None:
    scheduler = make()
    fill(scheduler, SPREAD)
    report(scheduler, "stopped", 1, a=0.4, b=0.4)
    clone = pickle.loads(pickle.dumps(scheduler))
    restored = make(grace_period=2)  # different rungs, replaced by restore
    path = tmp_path / "scheduler.pkl"
    scheduler.save(str(path))
    restored.restore(str(path))
    for copy in (clone, restored):
        assert copy.rung_levels == (1, 3)
        assert copy.stopped_early("stopped")
        assert copy.debug_string() == scheduler.debug_string()
        assert "epoch 1: 6 recorded" in copy.debug_string()
        # The recorded trials still decide: dominated by (0.5, 0.5), stopped; dominating, kept.
        assert report(copy, "dominated", 1, a=0.45, b=0.45) == STOP
        assert report(copy, "dominating", 1, a=0.95, b=0.95) == CONTINUE


# ---------------------------------------------------------------- Ray Tune integration

MAX_T = 9
# Arrival order is fixed (points_to_evaluate, one trial at a time). q = 1 trials form the final
# front on the line a + b = 1, arriving from the middle outwards so each is an extreme of the
# front so far; q < 1 trials are dominated and arrive once the rung has company.
CONFIGS = [
    {"x": 0.5, "q": 1.0},
    {"x": 0.5, "q": 0.5},
    {"x": 0.3, "q": 1.0},
    {"x": 0.7, "q": 1.0},
    {"x": 0.4, "q": 0.6},
    {"x": 0.1, "q": 1.0},
    {"x": 0.6, "q": 0.8},
    {"x": 0.9, "q": 1.0},
]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_tune_run_stops_dominated_trials_and_keeps_the_front(
    ray_cluster: None, tmp_path: Path
) -> None:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def objectives(config: dict[str, float], epoch: int) -> dict[str, float]:
        """Two objectives that trade off through x, scale with quality q, grow with epochs."""
        progress = 1 - 0.5**epoch
        return {
            "a": config["q"] * config["x"] * progress,
            "b": config["q"] * (1 - config["x"]) * progress,
        }

    def trainable(config: dict[str, float]) -> None:
        """Defined here so Ray pickles it by value (workers cannot import the test module)."""
        for epoch in range(1, MAX_T + 1):
            tune.report({"epoch": epoch, **objectives(config, epoch)})

    scheduler = MultiObjectiveASHA(["a", "b"], ["max", "max"], max_t=MAX_T)
    searcher = OptunaSearch(
        metric=["a", "b"],
        mode=["max", "max"],
        points_to_evaluate=CONFIGS,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.uniform(0, 1), "q": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            search_alg=searcher,
            num_samples=len(CONFIGS),
            max_concurrent_trials=1,
            reuse_actors=True,  # one trial actor for all eight: about 1 s less per trial
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    by_config = {(r.config["x"], r.config["q"]): r.metrics for r in results}
    assert set(by_config) == {(c["x"], c["q"]) for c in CONFIGS}

    final = np.array([list(objectives(c, MAX_T).values()) for c in CONFIGS])
    on_front = pareto_front(final, directions=["maximize", "maximize"])["on_front"].tolist()
    epochs = [by_config[(c["x"], c["q"])]["epoch"] for c in CONFIGS]
    trial_ids = [by_config[(c["x"], c["q"])]["trial_id"] for c in CONFIGS]
    assert on_front == [c["q"] == 1.0 for c in CONFIGS]
    # Every front trial ran its full budget; every dominated one was stopped at the first rung.
    assert epochs == [MAX_T if front else 1 for front in on_front]
    assert [scheduler.stopped_early(t) for t in trial_ids] == [not front for front in on_front]
