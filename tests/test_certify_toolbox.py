"""The certification toolbox: ``python -m trainables.certify_checkpoint``, AutoAttack,
Gaussian-noise training and the sweep-facing final verifier / attack.

Soundness checks: on the same samples, certified <= complete (MILP) <= attacked <= clean,
and no AutoAttack point breaks a certified sample.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from training_helpers import digits_config

from trainables.bounds import certify as bound_certify
from trainables.certify.rows import ROW_SCHEMA
from trainables.certify_checkpoint import main
from trainables.checkpoint_certification import certify_or_attack, load_trained
from trainables.config import ConfigError, load_config
from trainables.data import load_dataset
from trainables.models import build_model
from trainables.training.loop import train
from trainables.training.step import TrainingStep

SMALL_MLP = {"model.name": "mlp", "model.options": {"width": 32}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An IBP-trained small MLP on digits, as the training loop writes it."""
    out = tmp_path_factory.mktemp("ibp")
    overrides = {**SMALL_MLP, "method.name": "ibp", "epochs": 8, "eps_schedule.length": 4}
    train(load_config(digits_config({**overrides, "checkpoint.dir": str(out)})))
    return out


def test_cli_prints_and_writes_rows_that_order_soundly(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "rows.parquet"
    methods = ["ibp", "crown", "best", "milp", "bab", "lipschitz", "pgd"]
    args = ["--checkpoint", str(checkpoint), "--subset", "24", "--out", str(out)]
    assert main(args + [arg for m in methods for arg in ("--method", m)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert all(method in printed for method in methods)
    assert "certifying on cpu" in captured.err  # --device auto, no GPU here
    assert "milp at eps 0.1" in captured.err and "3/3" in captured.err  # 24 samples in 8s
    table = pq.read_table(out)
    assert table.schema.equals(ROW_SCHEMA, check_metadata=False)
    rows = table.to_pandas()
    linf = rows[rows.norm == "linf"].set_index("method")
    assert (linf.n == 24).all() and (linf.radius == 0.1).all()
    cert = linf.cert_acc
    # IBP and CROWN are not ordered (either can be tighter); the complete MILP bounds both.
    assert 0 < max(cert["ibp"], cert["crown"]) <= cert["best"] <= cert["milp"]
    assert cert["best"] <= cert["bab"] and linf.bab_undecided.notna()["bab"]
    assert cert["milp"] <= linf.robust_acc["pgd"]
    by_stage = json.loads(linf.certified_by["best"])
    assert list(by_stage) == ["ibp", "crown-ibp", "crown", "alpha-crown"]
    assert sum(by_stage.values()) == pytest.approx(cert["best"])
    assert linf.certified_by.drop("best").isna().all()
    assert linf.robust_acc["pgd"] <= linf.clean_acc["pgd"]
    assert set(rows[rows.method == "lipschitz"].norm) == {"linf", "l2"}
    assert rows.lipschitz_constant.dropna().gt(0).all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.pt", "does not exist"),
        (lambda tmp: torch.save({"weights": torch.zeros(1)}, tmp / "bare.pt") or tmp / "bare.pt",
         "not written by the training loop"),
    ],
)  # fmt: skip
def test_cli_bad_checkpoint_is_one_clear_error(make, message, tmp_path, capsys) -> None:
    assert main(["--checkpoint", str(make(tmp_path)), "--method", "ibp"]) == 2
    assert message in capsys.readouterr().err


def test_cli_and_certify_or_attack_reject_unknown_methods(checkpoint, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(checkpoint), "--method", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    model, _, splits = load_trained(str(checkpoint))
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        certify_or_attack(model, splits.test, "nope", eps=0.1)
    with pytest.raises(ValueError, match="smoothing needs sigma"):
        certify_or_attack(model, splits.test, "smoothing", eps=0.1, subset=2)


def test_autoattack_per_attack_accuracy_is_cumulative_and_sound(checkpoint) -> None:
    pytest.importorskip("pyautoattack")
    from trainables.attacks.autoattack import AA_COLUMNS, STANDARD_ATTACKS, autoattack_robust

    model, _, splits = load_trained(str(checkpoint))
    x, y = zip(*(splits.test[i] for i in range(0, 360, 45)), strict=True)
    x, y = torch.stack(x), torch.tensor(y)
    masks = autoattack_robust(model, x, y, 0.1)
    assert list(masks) == ["clean", *STANDARD_ATTACKS]
    chain = list(masks.values())
    assert all(not (later & ~earlier).any() for earlier, later in pairwise(chain))
    certified = bound_certify(model, x, y, 0.1, "crown")
    assert not (certified & ~masks["square"]).any(), "AutoAttack broke a certified sample"
    result = certify_or_attack(model, splits.test, "autoattack", eps=0.1, subset=4)
    assert result["kind"] == "empirical"
    aa = [result[column] for column in AA_COLUMNS.values()]
    assert aa == sorted(aa, reverse=True) and result["points"][0]["acc"] == aa[-1]


def test_gaussian_training_and_smoothing_certificates(tmp_path) -> None:
    config = load_config(
        digits_config(
            {**SMALL_MLP, "method.name": "gaussian", "method.sigma": 0.25, "epochs": 6,
             "eval.verifier": None, "eval.final_verifier": None}
        )
    )  # fmt: skip
    result = train(config)
    assert "loss_noisy" in result.history[-1]
    splits = load_dataset("digits")
    out = certify_or_attack(
        result.model, splits.test, "smoothing", eps=0.1, subset=12, sigma=0.25, smoothing_n=2000
    )
    accuracy = [point["acc"] for point in out["points"]]
    assert [point["radius"] for point in out["points"]] == [0.25, 0.5, 1.0]
    assert accuracy == sorted(accuracy, reverse=True)
    assert accuracy[0] >= 0.5, out


def test_gaussian_step_trains_on_noisy_inputs() -> None:
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    losses = {}
    for sigma in (1e-6, 2.0):
        overrides = {**SMALL_MLP, "method.name": "gaussian", "method.sigma": sigma}
        config = load_config(digits_config(overrides))
        torch.manual_seed(0)
        model = build_model("mlp", (1, 8, 8), 10, width=32)
        out = TrainingStep(model, model, config, 10, torch.Generator().manual_seed(0))(x, y, 0.1)
        losses[sigma] = out.terms["noisy"].item()
        clean = F.cross_entropy(out.logits, y).item()
    assert losses[1e-6] == pytest.approx(clean, rel=1e-4)
    assert losses[2.0] != pytest.approx(clean, rel=1e-2)


def test_config_final_verifier_and_attack() -> None:
    default = load_config({}).eval
    assert (default.final_verifier, default.final_attack) == ("best", "pgd")
    chosen = load_config({"eval.final_verifier": "milp", "eval.final_attack": "autoattack"})
    assert chosen.eval.final_verifier == "milp"
    for key, value in (("eval.final_attack", "fgsm"), ("eval.verifier", "milp")):
        with pytest.raises(ConfigError, match=key):
            load_config({key: value})


@pytest.mark.slow
def test_loop_final_evaluation_uses_milp_and_autoattack() -> None:
    pytest.importorskip("pyautoattack")
    overrides = {**SMALL_MLP, "method.name": "ibp", "epochs": 2, "eps_schedule.length": 1,
                 "eval.final_verifier": "milp", "eval.final_attack": "autoattack",
                 "eval.final_subset": 6, "eval.milp_time_limit": 5.0}  # fmt: skip
    final = train(load_config(digits_config(overrides))).final
    assert final["test_verifier"] == "milp" and final["test_n"] == 6
    assert final["test_cert_acc"] <= final["test_autoattack_acc"] <= final["test_clean_acc"]
    assert "test_aa_square_acc" in final and "test_milp_undecided" in final
