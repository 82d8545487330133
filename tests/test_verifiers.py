"""The verifier registry: names and ranks, the ``best`` cascade's mechanics, TF32 off inside
every certificate, and the config's validation of verifier names."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from trainables.certify.precision import full_float32
from trainables.certify.verifiers import (
    BEST_STAGES,
    VERIFIERS,
    Best,
    Verdicts,
    Verifier,
    make_configured_verifier,
    make_verifier,
    stage_fractions,
    unknown_verifier,
)
from trainables.config import ConfigError, load_config
from trainables.evaluation import evaluate


def tf32_flags() -> tuple[bool, bool, str]:
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )


@dataclass(frozen=True)
class Scripted(Verifier):
    """A stage that certifies the samples whose label is in ``labels``; logs what it saw."""

    name = "scripted"
    strength = None
    labels: tuple[int, ...] = ()
    seen: list = field(default_factory=list)

    def _certify(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Verdicts:
        self.seen.append((y.tolist(), tf32_flags()))
        return Verdicts(torch.tensor([int(label) in self.labels for label in y]))


class Identity(nn.Module):
    """Logits are the input itself: the prediction is the argmax of x."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def test_registry_names_ranks_and_options() -> None:
    assert set(BEST_STAGES) <= set(VERIFIERS) and "best" in VERIFIERS
    order = (
        "ibp", "crown-ibp", "best-until-crown-ibp", "crown", "alpha-crown", "best", "bab", "milp"
    )  # fmt: skip
    ranks = [VERIFIERS[name].strength for name in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert VERIFIERS["lipschitz"].strength is None  # not ordered with the bounds
    assert [name for name, kind in VERIFIERS.items() if kind.complete] == ["milp", "bab"]
    assert all(kind.norm == "linf" for kind in VERIFIERS.values())
    assert VERIFIERS["milp"].options() == VERIFIERS["bab"].options() == ("time_limit", "seed")
    assert VERIFIERS["alpha-crown"].options() == ("alpha_iterations", "alpha_lr")
    assert make_verifier("milp", time_limit=2.5).time_limit == 2.5
    with pytest.raises(ValueError, match=r"'ibp' has no option\(s\) \['time_limit'\]"):
        make_verifier("ibp", time_limit=1.0)
    assert "(did you mean crown-ibp?)" in unknown_verifier("crown_ibp")
    assert "did you mean" not in unknown_verifier("zzz")
    with pytest.raises(ValueError, match=r"unknown verifier 'bets' \(did you mean best\?\)"):
        evaluate(Identity(), [], eps=0.1, verifier="bets")


def scripted(name: str, labels: tuple[int, ...]) -> Scripted:
    return type(name, (Scripted,), {"name": name})(labels=labels)


def test_best_runs_each_stage_on_the_undecided_samples_only() -> None:
    x = torch.eye(4)[[0, 1, 2, 3, 0, 1]]  # predictions 0 1 2 3 0 1
    y = torch.tensor([0, 1, 2, 3, 0, 2])  # the last sample is misclassified
    stages = (scripted("a", (0,)), scripted("b", (1, 2)), scripted("c", (2, 3)))
    cascade = Best(stages=stages)
    verdicts = cascade.certify(Identity(), x, y, 0.1)
    assert verdicts.certified.tolist() == [True, True, True, True, True, False]
    seen = [[labels for labels, _ in stage.seen] for stage in stages]
    assert seen == [[[0, 1, 2, 3, 0]], [[1, 2, 3]], [[3]]]  # never the misclassified sample
    assert verdicts.certified_by == ("a", "b", "b", "c", "a", None)
    assert dict(verdicts.counts) == {"cert_by_a": 2, "cert_by_b": 2, "cert_by_c": 1}
    assert cascade.counters() == ("cert_by_a", "cert_by_b", "cert_by_c")
    quiet = scripted("d", (0, 1, 2, 3))
    Best(stages=(*stages, quiet)).certify(Identity(), x, y, 0.1)
    assert quiet.seen == []  # nothing left undecided: a later stage does not run at all


def test_best_default_stages_and_fractions() -> None:
    best = make_verifier("best")
    assert [stage.name for stage in best.stages] == list(BEST_STAGES)
    cheap = make_verifier("best-until-crown-ibp")
    assert [stage.name for stage in cheap.stages] == ["ibp", "crown-ibp"]
    assert best.counters() == (
        "cert_by_ibp", "cert_by_crown_ibp", "cert_by_crown", "cert_by_alpha_crown"
    )  # fmt: skip
    assert make_verifier("best", alpha_iterations=3).stages[-1].alpha_iterations == 3
    metrics = {"cert_acc": 0.5, "cert_by_ibp": 0.4, "cert_by_crown_ibp": 0.1, "cert_by_crown": 0}
    assert stage_fractions(metrics) == {"ibp": 0.4, "crown-ibp": 0.1, "crown": 0.0}
    assert stage_fractions({"cert_acc": 0.5}) is None


def test_certificates_run_without_tf32_and_restore_the_flags() -> None:
    before = tf32_flags()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        chosen = tf32_flags()
        assert chosen == (True, True, "high")
        stage = Scripted(labels=(0, 1, 2, 3))
        x, y = torch.eye(4), torch.arange(4)
        evaluate(Identity(), list(zip(x, y, strict=True)), eps=0.1, verifier=Best(stages=(stage,)))
        stage.certify(Identity(), x, y, 0.1)
        assert [flags for _, flags in stage.seen] == [(False, False, "highest")] * 2
        assert tf32_flags() == chosen
    finally:
        torch.set_float32_matmul_precision(before[2])
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.backends.cudnn.allow_tf32 = before[1]
    assert tf32_flags() == before


@pytest.mark.skipif(
    not hasattr(torch.backends.cudnn, "conv"), reason="per-backend fp32_precision: torch >= 2.9"
)
def test_a_per_backend_precision_state_is_restored_as_it_was() -> None:
    before = tf32_flags()
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    conv.fp32_precision, matmul.fp32_precision = "tf32", "tf32"  # the new API: legacy reads fail
    try:
        with full_float32():
            assert tf32_flags() == (False, False, "highest")
            assert "tf32" not in (conv.fp32_precision, matmul.fp32_precision)
        assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
    finally:
        torch.set_float32_matmul_precision(before[2])
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.backends.cudnn.allow_tf32 = before[1]
    assert tf32_flags() == before


def test_configured_verifiers_take_only_their_settings() -> None:
    settings = {"time_limit": 2.0, "seed": 3, "alpha_iterations": 4}
    assert make_configured_verifier("bab", settings) == make_verifier("bab", time_limit=2.0, seed=3)
    assert make_configured_verifier("alpha-crown", settings).alpha_iterations == 4
    assert make_configured_verifier("ibp", settings) == make_verifier("ibp")


def test_alpha_crown_and_bab_from_the_registry_certify_at_least_crown() -> None:
    """On a small trained-like network: alpha-CROWN (and the cascade ending with it) never
    certifies fewer samples than CROWN, and BaB, complete, proves what any bound proves."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.rand(24, 1, 2, 2)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    verdicts = {
        name: make_verifier(name).certify(model, x, y, 0.03).certified
        for name in ("crown", "alpha-crown", "best", "bab")
    }
    crown = verdicts["crown"]
    assert 0 < int(crown.sum()) < len(y)  # the case is neither trivial nor hopeless
    for stronger in ("alpha-crown", "best", "bab"):
        assert bool((verdicts[stronger] | ~crown).all()), stronger


def test_config_validates_verifier_names() -> None:
    default = load_config({}).eval
    assert (default.verifier, default.final_verifier) == ("crown-ibp", "best")
    assert load_config({"eval.verifier": "best"}).eval.verifier == "best"
    with pytest.raises(ConfigError, match=r"eval.final_verifier: .*did you mean crown\?"):
        load_config({"eval.final_verifier": "crwon"})
    with pytest.raises(ConfigError, match=r"eval.verifier: .*'milp' is a complete verifier"):
        load_config({"eval.verifier": "milp"})


def test_the_readme_lists_every_registered_verifier_with_its_rank() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \| (\d+|-) \|", readme, flags=re.MULTILINE)
    listed = {name: None if rank == "-" else int(rank) for name, rank in rows}
    assert listed == {name: kind.strength for name, kind in VERIFIERS.items()}


def test_reading_the_registry_does_not_import_torch() -> None:
    """The config validates verifier names against it, and the certify command's parser
    reads its names: the registry adds no torch import of its own."""
    check = "import sys, trainables.certify.verifiers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
