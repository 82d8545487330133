"""Trial-aware fronts and hypervolumes against pymoo, on random trial tables with ties.

pymoo's non-dominated sorting and hypervolume (both minimise) are the independent oracle:
they see only the full-budget completed trials, which the analysis must pick by itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import write_sweep

from analysis import compare, finished, hypervolume, hypervolume_progress, load, pareto_front
from analysis.front import directions_of

pytest.importorskip("pymoo")
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

STATUSES = ["completed", "completed", "pruned", "failed", "diverged"]


def random_trials(rng: np.random.Generator, n: int, m: int) -> pd.DataFrame:
    """Trials with objective values on a coarse grid (ties, duplicates, zeros), some NaN."""
    status = rng.choice(STATUSES, size=n)
    values = rng.integers(0, 5, size=(n, m)) / 4.0
    values[(status == "failed") & (rng.random(n) < 0.5)] = np.nan
    epochs = np.where(status == "pruned", 1, 4)
    epochs[(status == "completed") & (rng.random(n) < 0.1)] = 3  # a short "completed" one
    frame = pd.DataFrame(values, columns=[f"obj{i}" for i in range(m)])
    return frame.assign(
        trial_id=[f"t{i}" for i in range(n)],
        sweep="s",
        status=status,
        epochs_run=epochs,
        total_epochs=4,
    )


def pymoo_oracle(points: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, float]:
    """Ranks and hypervolume (reference 0 in the maximised frame) of NaN-free points."""
    minimised = -points * signs
    ranks = np.full(len(points), -1)
    for rank, front in enumerate(NonDominatedSorting().do(minimised) if len(points) else []):
        ranks[front] = rank
    beyond = minimised[np.all(minimised < 0, axis=1)]
    volume = float(HV(ref_point=np.zeros(points.shape[1]))(beyond)) if len(beyond) else 0.0
    return ranks, volume


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_front_and_hypervolume_match_pymoo(m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    trials = random_trials(rng, int(rng.integers(1, 40)), m)
    names = list(trials.columns[:m])
    directions = [str(d) for d in rng.choice(["maximize", "minimize"], size=m)]
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    reference = np.where(signs > 0, 0.0, 1.25)  # 1.25 is worse than every minimised value

    result = pareto_front(trials, names, directions)
    eligible = (trials["status"] == "completed") & (trials["epochs_run"] == 4)
    assert finished(trials).equals(eligible)
    usable = eligible & trials[names].notna().all(axis=1)
    ranks, _ = pymoo_oracle(trials.loc[usable, names].to_numpy(), signs)
    assert result.loc[usable, "rank"].to_numpy().tolist() == ranks.tolist()
    assert result.loc[~usable, "rank"].isna().all() and not result.loc[~usable, "on_front"].any()
    assert result["on_front"].equals(result["rank"].eq(0).fillna(False).astype(bool))

    _, volume = pymoo_oracle(trials.loc[usable, names].to_numpy() - reference, signs)
    assert hypervolume(trials, names, directions, reference) == pytest.approx(volume, abs=1e-12)

    # all_trials: pruned and failed rows with values take part as well
    with_values = trials[names].notna().all(axis=1)
    ranks_all, volume_all = pymoo_oracle(
        trials.loc[with_values, names].to_numpy() - reference, signs
    )
    every = pareto_front(trials, names, directions, all_trials=True)
    assert every.loc[with_values, "rank"].to_numpy().tolist() == ranks_all.tolist()
    assert hypervolume(trials, names, directions, reference, all_trials=True) == pytest.approx(
        volume_all, abs=1e-12
    )


def test_defaults_on_a_written_sweep(tmp_path: Path) -> None:
    """Default objectives come from the files, default reference is (0, 0), and the progress
    curve runs in the order trials ended and ends at the hypervolume."""
    write_sweep(str(tmp_path / "store"), "a", n=40)
    trials = load(str(tmp_path / "store" / "a"))
    done = trials[(trials.status == "completed") & (trials.epochs_run == trials.total_epochs)]
    points = done[["val_clean_acc", "val_cert_acc"]].to_numpy()
    ranks, volume = pymoo_oracle(points, np.ones(2))
    front = pareto_front(trials)
    assert front.loc[done.index, "rank"].tolist() == ranks.tolist()
    assert hypervolume(trials) == pytest.approx(volume, abs=1e-12)

    curve = hypervolume_progress(trials)
    assert curve.index.tolist() == trials.sort_values("written_at").index.tolist()
    assert np.all(np.diff(curve.to_numpy()) >= 0)
    assert curve.iloc[-1] == pytest.approx(volume, abs=1e-12)


def test_compare_side_by_side(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_sweep(str(store), "with_kd")
    write_sweep(str(store), "without_kd", seed=3)
    a, b = load(str(store / "with_kd")), load(str(store / "without_kd"))
    result = compare(str(store / "with_kd"), b)
    assert result.summary.index.tolist() == ["with_kd", "without_kd"]
    assert result.summary.loc["with_kd", "hypervolume"] == pytest.approx(hypervolume(a))
    assert result.summary.loc["without_kd", "hypervolume"] == pytest.approx(hypervolume(b))
    assert result.summary.loc["with_kd", "front_size"] == pareto_front(a)["on_front"].sum()
    assert result.summary[["completed", "pruned", "failed", "diverged"]].sum(axis=1).tolist() == [
        len(a),
        len(b),
    ]
    assert (result.fronts["rank"] == 0).all()
    assert set(result.fronts["sweep"]) == {"with_kd", "without_kd"}
    # a storage folder contributes each of its sweeps; the same sweep twice is an error
    assert compare(str(store)).summary.equals(result.summary)
    with pytest.raises(ValueError, match="given twice"):
        compare(a, a)


def test_the_sweeps_recorded_directions_are_the_default(tmp_path) -> None:
    modes = ["maximize", "minimize"]
    write_sweep(str(tmp_path), "mixed", directions=modes)
    trials = load(str(tmp_path / "mixed"))
    assert trials.attrs["directions"] == modes
    names = trials.attrs["objectives"]
    explicit = pareto_front(trials, names, modes)
    pd.testing.assert_frame_equal(pareto_front(trials), explicit)
    assert not pareto_front(trials).equals(pareto_front(trials, names, ["maximize"] * 2))
    # other objectives than the sweep's own: the recorded modes do not apply
    assert directions_of(trials, names[::-1]) is None
