"""The training loop on digits: every method learns what it should, and runs end cleanly.

Thresholds (seed 0, cnn_small, eps = 0.1, 20 epochs; test split, CROWN-IBP certificates,
10-step PGD): standard training certifies nothing (measured 0.0) and reaches PGD 0.57;
every certified method certifies >= 0.40 (measured 0.6-0.7); PGD-AT and TRADES reach PGD
accuracy >= standard + 0.10 (measured 0.83).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from training_helpers import digits_config

from trainables.config import load_config
from trainables.methods import method_names
from trainables.training.callbacks import RunInfo, TrainingCallback
from trainables.training.loop import RunResult, train


@pytest.fixture(scope="module")
def standard() -> RunResult:
    return train(load_config(digits_config({"method.name": "standard"})))


@pytest.mark.parametrize("method", method_names("certified"))
def test_certified_methods_certify_clearly_more_than_standard(method, standard) -> None:
    result = train(load_config(digits_config({"method.name": method})))
    assert result.status == "completed"
    assert standard.final["test_cert_acc"] <= 0.05
    assert result.final["test_cert_acc"] >= 0.40, result.final
    assert result.final["test_clean_acc"] >= 0.6, result.final


@pytest.mark.parametrize("method", method_names("adversarial"))
def test_adversarial_methods_resist_pgd_clearly_better_than_standard(method, standard) -> None:
    result = train(load_config(digits_config({"method.name": method})))
    assert result.final["test_pgd_acc"] >= standard.final["test_pgd_acc"] + 0.10, result.final
    assert result.final["test_clean_acc"] >= 0.85, result.final


class Recorder(TrainingCallback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.batches: list[dict[str, float]] = []
        self.epochs: list[dict[str, Any]] = []
        self.result: RunResult | None = None

    def on_train_begin(self, info: RunInfo) -> None:
        self.events.append("begin")
        self.info = info

    def on_batch_end(self, epoch: int, step: int, terms: dict[str, float]) -> None:
        self.batches.append(terms)

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.events.append("epoch")
        self.epochs.append(metrics)

    def on_train_end(self, result: RunResult) -> None:
        self.events.append("end")
        self.result = result


def test_epoch_metrics_and_callback_order() -> None:
    recorder = Recorder()
    config = load_config(
        digits_config({"method.name": "cc-ibp", "epochs": 4, "eps_schedule.length": 2})
    )
    result = train(config, [recorder])
    assert recorder.events == ["begin", "epoch", "epoch", "epoch", "epoch", "end"]
    assert (
        recorder.result is result and recorder.info.batches_per_epoch == len(recorder.batches) // 4
    )
    metrics = recorder.epochs[-1]
    for key in (
        "epoch",
        "eps",
        "lr",
        "loss",
        "loss_robust",
        "val_clean_acc",
        "val_cert_acc",
        "val_pgd_acc",
        "seconds",
        "examples_per_second",
    ):
        assert key in metrics, key
    # the ramp covers epochs 2-3; eps reaches its target at the first batch of epoch 4
    assert metrics["epoch"] == 4 and metrics["eps"] == pytest.approx(0.1)
    assert 0 < recorder.epochs[1]["eps"] < recorder.epochs[2]["eps"] < 0.1
    assert "loss_warmup_tightness" in recorder.epochs[1]  # the ramp is on in epoch 2
    for terms in recorder.batches:  # the total is the sum of the logged terms
        parts = sum(v for k, v in terms.items() if k != "loss")
        assert terms["loss"] == pytest.approx(parts, rel=1e-5)


class Poison(TrainingCallback):
    """Makes the weights non-finite after a given optimiser step."""

    def __init__(self, model_holder: dict[str, nn.Module], step: int) -> None:
        self.holder, self.step = model_holder, step

    def on_batch_end(self, epoch: int, step: int, terms: dict[str, float]) -> None:
        if step == self.step:
            with torch.no_grad():
                self.holder["model"].fc_out.weight.fill_(math.inf)


def test_non_finite_loss_ends_the_run_with_status_diverged(monkeypatch) -> None:
    holder: dict[str, nn.Module] = {}
    import trainables.training.loop as loop

    original = loop.shi_ibp_init

    def keep(model: nn.Module) -> None:
        holder["model"] = model
        original(model)

    monkeypatch.setattr(loop, "shi_ibp_init", keep)
    recorder = Recorder()
    config = load_config(
        digits_config({"method.name": "ibp", "epochs": 4, "eps_schedule.length": 3})
    )
    result = train(config, [Poison(holder, step=25), recorder])  # 20 batches per epoch
    assert result.status == "diverged"
    assert result.diverged_epoch == 2
    assert result.epochs_completed == 1 and len(result.history) == 1
    assert result.final == {}
    assert recorder.events[-1] == "end" and recorder.result is result


class Interrupt(TrainingCallback):
    def __init__(self, after_epoch: int) -> None:
        self.after_epoch = after_epoch

    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        if metrics["epoch"] == self.after_epoch:
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.parametrize("method", ["cc-ibp", "trades"])
def test_resumed_run_reaches_the_same_final_state(tmp_path, method) -> None:
    settings = digits_config(
        {"method.name": method, "epochs": 4, "eps_schedule.length": 2, "eval.every": 1}
    )
    whole = train(load_config({**settings, "checkpoint.dir": str(tmp_path / "a")}))
    interrupted = load_config({**settings, "checkpoint.dir": str(tmp_path / "b")})
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, [Interrupt(after_epoch=2)])
    recorder = Recorder()
    resumed = train(interrupted, [recorder])
    assert recorder.info.start_epoch == 2
    assert len(recorder.epochs) == 2  # only epochs 3 and 4 ran again
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    strip = [
        {k: v for k, v in m.items() if k not in ("seconds", "examples_per_second")}
        for m in whole.history
    ]
    again = [
        {k: v for k, v in m.items() if k not in ("seconds", "examples_per_second")}
        for m in resumed.history
    ]
    assert strip == again
    assert whole.final == resumed.final


def test_bn_conventions_both_train(tmp_path) -> None:
    for convention in ("clean", "own"):
        overrides = {
            "method.name": "cc-ibp",
            "bn_stats": convention,
            "model.name": "cnn7",
            "model.options": {"width": 4, "linear_size": 32},
            "epochs": 2,
            "eps_schedule.length": 1,
        }
        result = train(load_config(digits_config(overrides)))
        assert result.status == "completed"
        assert 0.0 <= result.final["test_cert_acc"] <= result.final["test_clean_acc"]


def test_the_final_verifier_certifies_the_validation_split_the_epochs_evaluate() -> None:
    """``val_final_cert_acc`` (what a sweep tunes on) is the final verifier's certificate of
    the first ``eval.subset`` validation examples, with its cascade's shares; without a
    final verifier there is none."""
    from trainables.certify.verifiers import make_verifier
    from trainables.models.modes import eval_mode
    from trainables.training.loop import load_splits

    settings = {"method.name": "ibp", "epochs": 1, "eps_schedule.start": 1, "test_eps": 0.02}
    settings["eps_schedule.length"] = 1
    settings.update({"eval.subset": 60, "eval.pgd_steps": 0, "eval.final_verifier": "best"})
    config = load_config(digits_config({**settings, "eval.final_subset": 30}))
    result = train(config)
    val = load_splits(config).val
    x = torch.stack([val[i][0] for i in range(60)])
    y = torch.tensor([int(val[i][1]) for i in range(60)])
    with eval_mode(result.model):
        verdicts = make_verifier("best").certify(result.model, x, y, 0.02)
    final = result.final
    assert final["val_final_n"] == 60 and final["test_n"] == 30
    assert final["val_final_cert_acc"] == pytest.approx(verdicts.certified.float().mean().item())
    assert 0 < final["val_final_cert_acc"] < 1, final  # a check that can tell values apart
    shares = {k: v / 60 for k, v in verdicts.counts.items()}
    by_stage = {k.removeprefix("val_final_"): v for k, v in final.items() if "final_cert_by" in k}
    assert by_stage == pytest.approx(shares) and len(shares) >= 3
    assert not any(k.startswith("val_final_") and "pgd" in k for k in final)  # no attack

    none = train(load_config(digits_config({**settings, "eval.final_verifier": None})))
    assert not any(k.startswith("val_final_") for k in none.final)
