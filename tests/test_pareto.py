"""Pareto fronts and hypervolume against hand-computed values, brute force and pymoo.

The brute-force oracles below share no code with analysis.pareto: ranks by Deb's peeling on a
full dominance matrix, hypervolume as an exact union of boxes on the grid of all coordinates.
pymoo (a test-only dependency) is a second, independent oracle where it is installed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.pareto import hypervolume, hypervolume_progress, pareto_front

# ---------------------------------------------------------------- brute-force oracles


def brute_ranks(values: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Deb's peeling on an n x n dominance matrix; -1 for rows with NaN."""
    better = values * signs
    n = len(better)
    valid = ~np.isnan(better).any(axis=1)
    dominates = np.zeros((n, n), dtype=bool)
    for i, j in itertools.product(range(n), repeat=2):
        if valid[i] and valid[j]:
            dominates[i, j] = bool(np.all(better[i] >= better[j]) and np.any(better[i] > better[j]))
    ranks = np.full(n, -1)
    remaining = set(np.flatnonzero(valid))
    rank = 0
    while remaining:
        front = {j for j in remaining if not any(dominates[i, j] for i in remaining)}
        for j in front:
            ranks[j] = rank
        remaining -= front
        rank += 1
    return ranks


def brute_hypervolume(values: np.ndarray, signs: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume of the union of boxes [reference, point], cell by cell on the grid."""
    gains = (values - reference) * signs
    gains = gains[np.all(gains > 0, axis=1)]
    if len(gains) == 0:
        return 0.0
    edges = [np.unique(np.concatenate(([0.0], gains[:, d]))) for d in range(gains.shape[1])]
    volume = 0.0
    for cell in itertools.product(*(range(1, len(e)) for e in edges)):
        upper = np.array([edges[d][k] for d, k in enumerate(cell)])
        if np.any(np.all(gains >= upper, axis=1)):
            volume += float(np.prod([edges[d][k] - edges[d][k - 1] for d, k in enumerate(cell)]))
    return volume


def tied_points(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """Coarse values: many ties and duplicates, some on the reference 0 and some beyond it."""
    return rng.integers(-1, 5, size=(n, m)) / 4.0


def signs_of(directions: list[str]) -> np.ndarray:
    return np.array([1.0 if d == "maximize" else -1.0 for d in directions])


def random_directions(rng: np.random.Generator, m: int) -> list[str]:
    return [str(d) for d in rng.choice(["maximize", "minimize"], size=m)]


# ---------------------------------------------------------------- pareto_front


def test_front_hand_example_2d() -> None:
    df = pd.DataFrame(
        {
            "val_clean_acc": [0.9, 0.8, 0.7, 0.9, np.nan, 0.5, 0.6],
            "val_cert_acc": [0.1, 0.3, 0.2, 0.1, 0.9, 0.05, 0.3],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    result = pareto_front(df)
    assert list(result.index) == [10, 11, 12, 13, 14, 15, 16]
    assert result["on_front"].dtype == bool
    assert result["on_front"].tolist() == [True, True, False, True, False, False, False]
    # 12 is dominated by 11; 16 only by 11 (tie in cert acc); 15 by 12, which has rank 1.
    assert result["rank"].tolist() == [0, 0, 1, 0, pd.NA, 2, 1]


def test_identical_points_share_a_rank() -> None:
    df = pd.DataFrame({"a": [1.0, 1.0, 2.0, 2.0, 0.0], "b": [1.0, 1.0, 2.0, 2.0, 3.0]})
    result = pareto_front(df, ["a", "b"])
    assert result["rank"].tolist() == [1, 1, 0, 0, 0]
    assert result["on_front"].tolist() == [False, False, True, True, True]


def test_front_three_objectives() -> None:
    points = np.array(
        [
            [1, 0, 0],
            [0, 1, 0],
            [0, 0, 1],
            [1, 1, 0],
            [0.5, 0.5, 0.5],
            [0.5, 0.5, 0.4],
            [0, 0, 0],
        ]
    )
    result = pareto_front(points)
    assert result["rank"].tolist() == [1, 1, 0, 0, 0, 1, 2]


def test_front_minimise_direction() -> None:
    df = pd.DataFrame({"cert": [0.3, 0.3, 0.2, 0.4], "seconds": [10.0, 20.0, 5.0, 50.0]})
    result = pareto_front(df, ["cert", "seconds"], ["maximize", "minimize"])
    assert result["on_front"].tolist() == [True, False, True, True]
    flipped = pareto_front(df, ["cert", "seconds"], ["maximize", "maximize"])
    assert flipped["on_front"].tolist() == [False, False, False, True]


def test_nan_rows_get_no_rank_and_do_not_dominate() -> None:
    df = pd.DataFrame(
        {
            "val_clean_acc": pd.array([0.5, None, 0.9, 0.4], dtype="Float64"),
            "val_cert_acc": [0.5, 0.99, np.nan, 0.4],
        }
    )
    result = pareto_front(df)
    assert result["rank"].isna().tolist() == [False, True, True, False]
    assert result["on_front"].tolist() == [True, False, False, False]
    assert result["rank"].tolist()[3] == 1


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_ranks_match_brute_force(m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = tied_points(rng, 40, m)
    values[rng.random(40) < 0.1, rng.integers(m)] = np.nan
    directions = random_directions(rng, m)
    result = pareto_front(values, directions=directions)
    expected = brute_ranks(values, signs_of(directions))
    assert result["rank"].fillna(-1).tolist() == expected.tolist()
    assert result["on_front"].tolist() == (expected == 0).tolist()


@pytest.mark.parametrize("m", [2, 3, 5])
def test_ranks_match_pymoo(m: int) -> None:
    pytest.importorskip("pymoo")
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(m)
    values = tied_points(rng, 300, m)
    directions = random_directions(rng, m)
    _, expected = NonDominatedSorting().do(-values * signs_of(directions), return_rank=True)
    result = pareto_front(values, directions=directions)
    assert result["rank"].tolist() == expected.tolist()


def test_empty_frame() -> None:
    df = pd.DataFrame({"val_clean_acc": [], "val_cert_acc": []})
    assert pareto_front(df).empty
    assert hypervolume(df) == 0.0
    assert hypervolume_progress(df).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objectives": ["val_clean_acc", "nope"]}, r"nope"),
        ({"directions": ["maximize", "maximise"]}, r"maximise"),
        ({"directions": ["maximize"]}, r"1 directions"),
        ({"directions": "maximize"}, r"sequence of strings"),
        ({"objectives": "val_clean_acc"}, r"sequence of strings"),
        ({"objectives": ["val_clean_acc", "val_clean_acc"]}, r"repeated"),
        ({"objectives": ["val_clean_acc", "name"]}, r"numeric"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    df = pd.DataFrame({"val_clean_acc": [0.5], "val_cert_acc": [0.2], "name": ["x"]})
    with pytest.raises(ValueError, match=message):
        pareto_front(df, **kwargs)
    with pytest.raises(ValueError, match=message):
        hypervolume(df, **kwargs)


def test_bad_hypervolume_arguments() -> None:
    df = pd.DataFrame({"val_clean_acc": [0.5], "seconds": [3.0]})
    objectives = ["val_clean_acc", "seconds"]
    directions = ["maximize", "minimize"]
    with pytest.raises(ValueError, match=r"reference point is required.*seconds"):
        hypervolume(df, objectives, directions)
    with pytest.raises(ValueError, match=r"reference has 3 values"):
        hypervolume(df, objectives, directions, reference=[0, 1, 2])
    with pytest.raises(ValueError, match=r"finite"):
        hypervolume(df, objectives, directions, reference=[0, np.nan])
    with pytest.raises(ValueError, match=r"objectives name DataFrame columns"):
        hypervolume(np.ones((2, 2)), objectives=["a", "b"])
    with pytest.raises(ValueError, match=r"2-D"):
        hypervolume_progress(np.ones(3))


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_hand_examples() -> None:
    df = pd.DataFrame({"val_clean_acc": [1.0, 2.0, 3.0], "val_cert_acc": [3.0, 2.0, 1.0]})
    assert hypervolume(df) == pytest.approx(6.0)  # 3 + 2 + 1 unit-wide columns
    assert hypervolume(df, reference=[1.0, 1.0]) == pytest.approx(1.0)  # only (2, 2) counts
    # Three boxes of volume 2 whose pairwise and triple overlaps are the unit cube: 6 - 3 + 1.
    cube = np.array([[2.0, 1, 1], [1, 2, 1], [1, 1, 2]])
    assert hypervolume(cube) == pytest.approx(4.0)
    assert hypervolume(np.array([[2.0, 3, 4, 5]])) == pytest.approx(120.0)


def test_hypervolume_minimise_and_reference_boundary() -> None:
    df = pd.DataFrame({"acc": [0.5, 0.8, 0.9, 0.6, 0.0], "seconds": [20.0, 60, 120, 100, 10]})
    volume = hypervolume(df, ["acc", "seconds"], ["maximize", "minimize"], reference=[0, 100])
    # Gains (0.5, 80) and (0.8, 40); 0.9 lies beyond the time limit, 0.6 and 0.0 on its edge.
    assert volume == pytest.approx(0.5 * 80 + 0.3 * 40)


def test_points_not_beating_the_reference_add_nothing() -> None:
    points = np.array([[0.0, 5.0], [5.0, 0.0], [-1.0, 9.0], [0.5, 0.5]])
    assert hypervolume(points) == pytest.approx(0.25)
    assert hypervolume(points[:3]) == 0.0


def test_nan_rows_add_no_hypervolume() -> None:
    points = np.array([[1.0, 1.0], [np.nan, 5.0], [2.0, np.nan]])
    assert hypervolume(points) == pytest.approx(1.0)


@pytest.mark.parametrize(("m", "n"), [(1, 8), (2, 12), (3, 10), (4, 8), (5, 6)])
@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_matches_brute_force(m: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(100 * m + seed)
    values = tied_points(rng, n, m)
    directions = random_directions(rng, m)
    reference = np.where(signs_of(directions) > 0, 0.0, 1.0)
    expected = brute_hypervolume(values, signs_of(directions), reference)
    assert hypervolume(values, directions=directions, reference=reference) == pytest.approx(
        expected, rel=1e-12, abs=1e-12
    )


def test_hypervolume_of_the_front_equals_that_of_all_points() -> None:
    rng = np.random.default_rng(7)
    df = pd.DataFrame(rng.random((200, 3)), columns=["a", "b", "c"])
    on_front = pareto_front(df, ["a", "b", "c"])["on_front"]
    full = hypervolume(df, ["a", "b", "c"])
    assert hypervolume(df[on_front], ["a", "b", "c"]) == pytest.approx(full, rel=1e-12)
    # Every front point has a positive exclusive contribution (random reals: no ties).
    dropped = df[on_front].iloc[1:]
    assert hypervolume(dropped, ["a", "b", "c"]) < full


@pytest.mark.parametrize(("m", "n"), [(2, 500), (3, 200), (4, 60), (5, 25)])
@pytest.mark.parametrize("kind", ["ties", "continuous"])
def test_hypervolume_matches_pymoo(m: int, n: int, kind: str) -> None:
    pytest.importorskip("pymoo")
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(m)
    values = tied_points(rng, n, m) if kind == "ties" else rng.normal(size=(n, m))
    directions = random_directions(rng, m)
    signs = signs_of(directions)
    reference = np.where(signs > 0, -0.5, 0.5)
    expected = HV(ref_point=-reference * signs)(-values * signs)
    result = hypervolume(values, directions=directions, reference=reference)
    assert result > 0
    assert result == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- hypervolume_progress


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_progress_equals_hypervolume_of_each_prefix(m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = tied_points(rng, 30, m)
    values[rng.random(30) < 0.15, 0] = np.nan
    directions = random_directions(rng, m)
    reference = np.where(signs_of(directions) > 0, 0.0, 1.0)
    progress = hypervolume_progress(values, directions=directions, reference=reference)
    expected = [
        hypervolume(values[:k], directions=directions, reference=reference)
        for k in range(1, len(values) + 1)
    ]
    np.testing.assert_allclose(progress, expected, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(progress) >= 0)


def test_progress_hand_example() -> None:
    df = pd.DataFrame(
        {
            "val_clean_acc": [0.5, 0.4, 0.9, np.nan, 0.5, 1.0],
            "val_cert_acc": [0.5, 0.4, 0.1, 0.8, 0.6, 0.6],
        }
    )
    # Second trial is dominated, third adds 0.4 * 0.1, fourth failed, fifth adds 0.5 * 0.1,
    # the last dominates all and brings the total to its own box.
    expected = [0.25, 0.25, 0.29, 0.29, 0.34, 0.6]
    np.testing.assert_allclose(hypervolume_progress(df), expected, rtol=1e-12)


@pytest.mark.parametrize("m", [2, 3])
def test_progress_of_many_trials(m: int) -> None:
    """Thousands of trials, worst case for the front: all points mutually non-dominated."""
    rng = np.random.default_rng(m)
    n = 20_000 if m == 2 else 1_500
    simplex = rng.dirichlet(np.ones(m), size=n)  # on the plane sum = 1: no point dominates
    values = np.vstack([simplex, rng.random((n // 4, m)) * 0.5])[rng.permutation(n + n // 4)]
    progress = hypervolume_progress(values)
    assert progress.shape == (len(values),)
    assert np.all(np.diff(progress) >= 0)
    assert progress[-1] == pytest.approx(hypervolume(values), rel=1e-9)
