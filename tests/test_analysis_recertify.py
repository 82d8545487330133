"""Re-certification of a sweep's front from a real (tiny) trained digits checkpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from analysis_helpers import write_sweep
from training_helpers import digits_config

from analysis import build_report, load, pareto_front
from analysis.__main__ import main
from analysis.loading import find_sweeps
from analysis.recertify import recertify
from trainables.checkpoint_certification import load_trained
from trainables.config import load_config
from trainables.evaluation import evaluate
from trainables.results import read_recertified
from trainables.training.loop import train

SUBSET = 16


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One epoch of standard training on digits (a few seconds): CROWN certifies some points."""
    folder = tmp_path_factory.mktemp("run")
    settings = {"method.name": "standard", "epochs": 1, "eps_schedule.start": 1}
    settings.update({"checkpoint.dir": str(folder), "eval.final_subset": 8, "eval.pgd_steps": 0})
    result = train(load_config(None, digits_config(settings)), [])
    return str(result.checkpoint)


@pytest.fixture
def sweep(tmp_path: Path, checkpoint: str) -> str:
    write_sweep(
        str(tmp_path / "store"),
        "digits",
        n=8,
        checkpoint_uri=checkpoint,
        statuses=("completed", "completed", "pruned"),
    )
    return str(tmp_path / "store" / "digits")


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_recertify_front_writes_a_new_dataset(sweep: str, checkpoint: str) -> None:
    before = snapshot(Path(sweep))
    rows = recertify(sweep, "crown", subset=SUBSET, progress=False)

    trials = load(sweep)
    front = trials.loc[pareto_front(trials)["on_front"], "trial_id"]
    assert sorted(rows["trial_id"]) == sorted(front) and len(front) > 0
    assert (rows["status"] == "completed").all() and (rows["n"] == SUBSET).all()
    # the same number through evaluate(), a separate path to the bound code
    model, config, splits = load_trained(checkpoint, torch.device("cpu"))
    direct = evaluate(
        model, splits.test, eps=config.eval_eps, verifier="crown", pgd_steps=0, subset=SUBSET
    )
    assert rows["cert_acc"].tolist() == [direct["cert_acc"]] * len(rows)
    assert rows["clean_acc"].tolist() == [direct["clean_acc"]] * len(rows)
    assert (rows["search_verifier"] == "crown-ibp").all()

    after = snapshot(Path(sweep))
    new = {name for name in after if name not in before}
    assert {name: after[name] for name in before} == before  # originals untouched
    assert new == {f"recertified/crown-test/trial={t}.parquet" for t in front}

    stored = read_recertified(find_sweeps(sweep)[0])
    assert sorted(stored["trial_id"]) == sorted(front)
    assert stored["cert_acc"].tolist() == rows["cert_acc"].tolist()
    assert (stored["eps"] == config.eval_eps).all() and (stored["subset"] == SUBSET).all()

    report = build_report(sweep)
    header = next(line for line in report.markdown.splitlines() if line.startswith("| trial_id"))
    assert "test_cert_acc" in header and "test_cert_acc [crown]" in header  # both numbers


def test_cli_records_failures(sweep: str, capsys: pytest.CaptureFixture[str]) -> None:
    trials = load(sweep)
    good = trials.loc[trials.status == "completed", "trial_id"].iloc[0]
    pruned = trials.loc[trials.status == "pruned", "trial_id"].iloc[0]  # no checkpoint
    code = main(
        ["recertify", sweep, "--verifier", "ibp", "--subset", "8", "--trials", good, pruned]
    )
    assert code == 1  # one trial failed; the other still ran and was written
    assert good in capsys.readouterr().out
    stored = read_recertified(find_sweeps(sweep)[0]).set_index("trial_id")
    assert stored.loc[good, "status"] == "completed" and stored.loc[good, "n"] == 8
    assert stored.loc[pruned, "status"] == "failed"
    assert "has no checkpoint_uri" in stored.loc[pruned, "error"]


def test_milp_recertification_certifies_at_least_crown(sweep: str) -> None:
    trials = load(sweep)
    member = trials.loc[pareto_front(trials)["on_front"], "trial_id"].iloc[:1].tolist()
    options = {"subset": 4, "trial_ids": member, "progress": False}
    crown = recertify(sweep, "crown", **options).iloc[0]
    best = recertify(sweep, "best", **options).iloc[0]
    milp = recertify(sweep, "milp", time_limit=0.5, **options).iloc[0]
    assert crown["cert_acc"] <= best["cert_acc"]  # the cascade ends with CROWN
    assert sum(json.loads(best["certified_by"]).values()) == pytest.approx(best["cert_acc"])
    assert milp["status"] == "completed", milp["error"]
    assert milp["cert_acc"] >= crown["cert_acc"]  # MILP runs CROWN first
    assert milp["clean_acc"] == crown["clean_acc"]
    assert 0 <= milp["milp_undecided"] <= 1 - milp["cert_acc"]
    stored = read_recertified(find_sweeps(sweep)[0])
    assert set(stored["verifier"]) == {"crown", "best", "milp"}
    assert stored.set_index("verifier").certified_by.notna().to_dict() == {
        "best": True, "crown": False, "milp": False
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown verifier 'bets' \(did you mean best\?\)"):
        recertify(sweep, "bets", **options)


@pytest.fixture
def ray_local() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_recertify_over_ray_tasks(
    sweep: str, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from analysis import recertify as module

    calls = []
    run_on_ray = module._run_on_ray
    monkeypatch.setattr(
        module, "_run_on_ray", lambda *a, **k: calls.append(1) or run_on_ray(*a, **k)
    )
    on_ray = recertify(sweep, "ibp", subset=8, split="val", progress=False)
    assert calls == [1]
    ray.shutdown()
    in_process = recertify(sweep, "ibp", subset=8, split="val", progress=False)
    assert calls == [1]
    assert (on_ray["status"] == "completed").all()
    assert (
        on_ray.set_index("trial_id")["cert_acc"]
        .sort_index()
        .equals(in_process.set_index("trial_id")["cert_acc"].sort_index())
    )
