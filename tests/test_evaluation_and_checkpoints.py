"""Evaluation consistency (cert <= PGD <= clean, per sample) and checkpoint safety."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from training_helpers import digits_config

from trainables.attacks import pgd_robust
from trainables.bounds import certify
from trainables.certify.verifiers import BEST_STAGES, make_verifier, stage_metric
from trainables.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from trainables.config import load_config
from trainables.data import load_dataset
from trainables.evaluation import evaluate
from trainables.models import build_model
from trainables.training.loop import train


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    config = digits_config({"method.name": "ibp", "epochs": 8, "eps_schedule.length": 4})
    return train(load_config(config)).model


@pytest.mark.parametrize("verifier", ["ibp", "crown-ibp", "crown"])
def test_certified_samples_resist_pgd_and_are_correct(trained, verifier) -> None:
    data = load_dataset("digits")
    x, y = zip(*(data.test[i] for i in range(120)), strict=True)
    x, y = torch.stack(x), torch.tensor(y)
    cert = certify(trained, x, y, 0.1, verifier)
    robust = pgd_robust(trained, x, y, 0.1, steps=20, restarts=2)
    with torch.no_grad():
        correct = trained.eval()(x).argmax(1) == y
    assert cert.any(), "the trained model should certify some samples"
    assert not (cert & ~robust).any(), "PGD broke a certified sample: unsound bound"
    assert not (robust & ~correct).any()


def test_best_certifies_whatever_a_stage_certifies(trained) -> None:
    """This IBP-trained CNN is one where CROWN misses a sample IBP certifies (test sample 7,
    with the bounds of this commit): ``best`` takes the union, stage by stage."""
    data = load_dataset("digits")
    x, y = zip(*(data.test[i] for i in range(120)), strict=True)
    x, y = torch.stack(x), torch.tensor(y)
    masks = {
        name: make_verifier(name).certify(trained, x, y, 0.1).certified for name in BEST_STAGES
    }
    best = make_verifier("best").certify(trained, x, y, 0.1)
    union = torch.stack(list(masks.values())).any(dim=0)
    assert masks["ibp"].sum() > 0
    assert torch.equal(best.certified, union)  # so best >= ibp, crown-ibp and crown per sample
    for i, stage in enumerate(best.certified_by):  # the first stage that certifies it
        first = next((name for name in BEST_STAGES if masks[name][i]), None)
        assert stage == first
    assert sum(best.counts.values()) == int(best.certified.sum())
    metrics = evaluate(trained, data.test, eps=0.1, verifier="best", pgd_steps=0, subset=120)
    assert metrics["cert_acc"] == pytest.approx(union.float().mean().item())
    stages = [metrics[stage_metric(name)] for name in BEST_STAGES]
    assert sum(stages) == pytest.approx(metrics["cert_acc"])


def test_evaluate_orders_metrics_and_is_repeatable(trained) -> None:
    val = load_dataset("digits").val
    first = evaluate(trained, val, eps=0.1, verifier="crown-ibp", pgd_steps=10, seed=3)
    again = evaluate(trained, val, eps=0.1, verifier="crown-ibp", pgd_steps=10, seed=3)
    assert first == again
    assert first["n"] == len(val)
    assert 0 < first["cert_acc"] <= first["pgd_acc"] <= first["clean_acc"] <= 1
    subset = evaluate(trained, val, eps=0.1, verifier=None, pgd_steps=0, subset=50)
    assert subset["n"] == 50 and set(subset) == {"n", "clean_acc"}
    assert trained.training is False or trained.training is True  # mode untouched below
    trained.train()
    evaluate(trained, val, eps=0.1, verifier="ibp", pgd_steps=2, subset=10)
    assert trained.training, "evaluate must restore the caller's mode"


def test_checkpoint_round_trip_is_atomic(tmp_path) -> None:
    path = tmp_path / "ckpt" / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 3, "weights": torch.arange(4.0), "history": [{"a": 1.0}]})
    save_checkpoint(path, {"epoch": 4, "weights": torch.arange(5.0), "history": []})
    state = load_checkpoint(path)
    assert state["epoch"] == 4 and torch.equal(state["weights"], torch.arange(5.0))
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temp files left


def test_failed_write_keeps_the_previous_checkpoint(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"epoch": 2, "bad": Unpicklable()})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


class Payload:
    """A pickled object that weights_only loading must refuse to construct."""


def test_loading_refuses_pickled_code_and_reports_bad_files(tmp_path) -> None:
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"x": Payload()}, unsafe)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(unsafe)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_from_another_architecture_lists_the_keys() -> None:
    source = build_model("mlp", (1, 8, 8), 10, depth=2, width=32).state_dict()
    target = build_model("cnn_small", (1, 8, 8), 10)
    with pytest.raises(CheckpointError) as info:
        load_model_state(target, source, "checkpoint x.pt")
    message = str(info.value)
    assert "checkpoint x.pt does not fit" in message
    assert "missing keys: conv1.bias, conv1.weight, conv2.bias, conv2.weight" in message
    assert "unexpected keys: fc2.bias, fc2.weight" in message
    assert "fc1.weight (32, 64) != (100, 128)" in message


def test_resume_from_another_architecture_is_a_clear_error(tmp_path) -> None:
    settings = digits_config({"method.name": "standard", "epochs": 1, "eps_schedule.start": 1})
    train(load_config({**settings, "checkpoint.dir": str(tmp_path)}))
    other = load_config({**settings, "checkpoint.dir": str(tmp_path), "model.name": "mlp"})
    with pytest.raises(CheckpointError, match="missing keys"):
        train(other)
