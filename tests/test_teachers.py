"""Teachers: registry, safe checked loading, the recipe cache, and distilled students on digits.

One small PGD-AT teacher (cnn_small with a 64-unit penultimate layer, so the default
100-unit student needs the learned projection) is trained once per module into a temporary
cache; every student here distils from it for a few epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import digits_config

import trainables.training.teacher_cache as cache
from trainables.checkpoints import save_checkpoint
from trainables.config import ConfigError, load_config
from trainables.data import load_dataset
from trainables.evaluation import evaluate
from trainables.models import build_model
from trainables.teachers import (
    BUILTIN_RECIPES,
    TeacherError,
    load_teacher,
    recipe_hash,
    resolve_teacher,
)
from trainables.train import main
from trainables.training.callbacks import TrainingCallback
from trainables.training.loop import RunResult, train
from trainables.training.teacher_cache import ensure_teacher

RECIPE = """teachers:
  small-pgd:
    recipe:
      dataset.name: digits
      model: {name: cnn_small, options: {linear_size: 64}}
      method.name: pgd-at
      eps: 0.1
      epochs: 3
      optim.lr: 0.005
      eps_schedule: {start: 1, length: 2}
      eval: {every: 100, pgd_steps: 5, final_subset: 50}
"""

#: Student settings: digits, 3 epochs, a cheap final certificate.
STUDENT: dict[str, Any] = {
    "method.name": "cc-ibp",
    "epochs": 3,
    "eps_schedule.length": 1,
    "eval.pgd_steps": 5,
    "eval.final_subset": 100,
    "teacher.name": "small-pgd",
}

DIGITS = load_dataset("digits").info


@pytest.fixture(scope="module")
def teacher_setup(tmp_path_factory) -> dict[str, Any]:
    """Trains the module's teacher into a fresh cache; the student settings that name it."""
    root = tmp_path_factory.mktemp("teachers")
    registry = root / "registry.yaml"
    registry.write_text(RECIPE)
    settings = digits_config(
        {**STUDENT, "teacher.registry": str(registry), "teacher.cache_dir": str(root / "cache")}
    )
    calls = []
    original = cache.train

    def counted(config, callbacks=()):
        calls.append(config)
        return original(config, callbacks)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache, "train", counted)
        path = ensure_teacher(load_config(settings))
    return {"settings": settings, "path": path, "calls": calls, "root": root}


# -- the recipe cache ----------------------------------------------------------------------


def test_recipe_teacher_trains_once_and_later_trials_reuse_it(teacher_setup, monkeypatch) -> None:
    path, calls = teacher_setup["path"], teacher_setup["calls"]
    assert len(calls) == 1 and calls[0].method.name == "pgd-at"
    assert path.is_file() and path.name == "teacher.pt"
    assert (path.parent / "recipe.yaml").is_file() and not (path.parent / "run").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached teacher must not be trained again")

    monkeypatch.setattr(cache, "train", no_training)
    other_trial = {**teacher_setup["settings"], "seed": 4, "distill.beta": 0.3, "device": "cpu"}
    assert ensure_teacher(load_config(other_trial)) == path
    teacher = load_teacher(load_config(other_trial), DIGITS, torch.device("cpu"))
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_recipe_hash_ignores_where_a_teacher_runs_but_not_what_it_is() -> None:
    config = load_config(BUILTIN_RECIPES["pgd-at-digits"])
    moved = config.model_copy(update={"device": "cuda", "num_workers": 4})
    assert recipe_hash(config) == recipe_hash(moved)
    assert recipe_hash(config) != recipe_hash(config.model_copy(update={"epochs": 21}))


def test_builtin_and_generic_recipes_resolve(tmp_path) -> None:
    student = {"eps": 0.2, "epochs": 7, "model.name": "mlp", "teacher.cache_dir": str(tmp_path)}
    spec = resolve_teacher(load_config({**student, "teacher.name": "pgd-at-digits"}))
    assert spec.recipe.method.name == "pgd-at" and spec.recipe.eps == 0.1
    assert spec.location.startswith(str(tmp_path)) and spec.location.endswith("teacher.pt")
    generic = resolve_teacher(load_config({**student, "teacher.name": "trades"})).recipe
    assert (generic.method.name, generic.model.name, generic.eps, generic.epochs) == (
        "trades",
        "mlp",
        0.2,
        7,
    )
    assert generic.eval.verifier is None and generic.seed == 0
    named = resolve_teacher(load_config({**student, "teacher.name": "pgd-at:preact_resnet18"}))
    assert named.model == "preact_resnet18" and named.options == {}
    with pytest.raises(TeacherError, match=r"unknown teacher 'wrn'.*pgd-at-digits"):
        resolve_teacher(load_config({"teacher.name": "wrn"}))


def test_recipe_teacher_must_be_trained_before_the_loop(tmp_path) -> None:
    config = load_config({"teacher.name": "pgd-at-digits", "teacher.cache_dir": str(tmp_path)})
    with pytest.raises(TeacherError, match=r"not trained yet.*ensure_teacher"):
        load_teacher(config, DIGITS, torch.device("cpu"))
    with pytest.raises(TeacherError, match="unknown teacher"):
        train(
            load_config(
                digits_config(
                    {"teacher.name": "no-such-teacher", "epochs": 2, "eps_schedule.length": 1}
                )
            )
        )


def test_teacher_config_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match="distillation needs a certified method"):
        load_config({"teacher.name": "pgd-at-digits", "method.name": "trades"})
    with pytest.raises(ConfigError, match=r"saad\.enabled needs a teacher"):
        load_config({"saad.enabled": True})
    with pytest.raises(ConfigError, match=r"distill\.beta"):
        load_config({"distill.beta": -1.0})
    with pytest.raises(ConfigError, match=r"saad\.weighting"):
        load_config({"saad.weighting": "loss"})
    with pytest.raises(ConfigError, match=r"distill\.inputz: unknown key"):
        load_config({"distill.inputz": "adv"})


# -- checkpoint teachers: paths, URIs, errors ----------------------------------------------


def _registry(tmp_path: Path, entry: str) -> dict[str, Any]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"teachers:\n  t:\n{entry}")
    return {"teacher.name": "t", "teacher.registry": str(registry)}


def _saved_teacher(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("cnn_small", DIGITS.input_shape, 10, mean=DIGITS.mean, std=DIGITS.std)
    path = save_checkpoint(tmp_path / "weights.pt", model.state_dict())
    return path, model


@pytest.mark.parametrize("as_uri", [False, True])
def test_checkpoint_teacher_loads_from_a_path_or_a_uri(tmp_path, as_uri) -> None:
    path, model = _saved_teacher(tmp_path)
    location = path.as_uri() if as_uri else str(path)
    keys = _registry(tmp_path, f"    model: cnn_small\n    checkpoint: {location}\n")
    teacher = load_teacher(load_config(keys), DIGITS, torch.device("cpu"))
    assert teacher.location == location
    for key, value in model.state_dict().items():
        assert torch.equal(value, teacher.model.state_dict()[key]), key
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("    model: cnn_small\n    checkpoint: {missing}\n", "does not exist"),
        ("    model: cnn_small\n    checkpoint: file://{missing}\n", "does not exist"),
        ("    model: cnn_small\n    checkpoint: nosuchfs://bucket/t.pt\n", "cannot be read"),
        ("    model: mlp\n    checkpoint: {saved}\n", "does not fit this model"),
        ("    model: cnn9\n    checkpoint: {saved}\n", "unknown model 'cnn9'"),
        ("    model: cnn_small\n", "checkpoint: Field required"),
        ("    recipe: {method.name: cc-ibp}\n", "a recipe trains with pgd-at or trades"),
        ("    recipe: {method.lr: 1}\n", "method.lr: unknown key"),
    ],
)
def test_each_bad_teacher_is_one_clear_error(tmp_path, entry, message) -> None:
    saved, _ = _saved_teacher(tmp_path)
    missing = tmp_path / "missing.pt"
    keys = _registry(
        tmp_path, entry.replace("{saved}", str(saved)).replace("{missing}", str(missing))
    )
    with pytest.raises(TeacherError, match=message) as info:
        load_teacher(load_config(keys), DIGITS, torch.device("cpu"))
    assert "'t'" in str(info.value)  # names the teacher


def test_recipe_on_another_dataset_is_refused(tmp_path) -> None:
    keys = _registry(tmp_path, "    recipe: {method.name: pgd-at, dataset.name: mnist}\n")
    config = load_config({**keys, "teacher.cache_dir": str(tmp_path)})
    with pytest.raises(TeacherError, match="trained on 'mnist'"):
        load_teacher(config, DIGITS, torch.device("cpu"))


# -- distilled students on digits ----------------------------------------------------------


class Recorder(TrainingCallback):
    def __init__(self) -> None:
        self.batches: list[dict[str, float]] = []

    def on_batch_end(self, epoch: int, step: int, terms: dict[str, float]) -> None:
        self.batches.append(terms)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"distill.distance": "cosine", "method.alpha": 0.0},
        {"distill.objective": "logit", "distill.inputs": "adv", "distill.temperature": 2.0},
        {"distill.objective": "logit", "distill.inputs": "ibp"},
        {"saad.enabled": True},
        {
            "distill.objective": "logit",
            "distill.inputs": "both",
            "saad.enabled": True,
            "saad.weighting": "transfer",
            "saad.on_certified": True,
            "saad.clean_weight": 0.5,
        },
    ],
    ids=["feature-l2", "feature-cosine-alpha0", "logit-adv", "logit-ibp", "saad", "saad-all"],
)
def test_distilled_student_trains_end_to_end(teacher_setup, overrides) -> None:
    recorder = Recorder()
    result = train(load_config({**teacher_setup["settings"], **overrides}), [recorder])
    assert result.status == "completed"
    final = result.final
    assert 0 <= final["test_cert_acc"] <= final["test_pgd_acc"] <= final["test_clean_acc"]
    for terms in recorder.batches:
        assert "loss_distill" in terms
        parts = sum(v for k, v in terms.items() if k != "loss")
        assert terms["loss"] == pytest.approx(parts, rel=1e-5)
    teacher_metrics = {
        (m["teacher_val_clean_acc"], m["teacher_val_pgd_acc"]) for m in result.history
    }
    assert len(teacher_metrics) == 1  # measured once, at load time
    assert all(m["teacher_seconds"] > 0 for m in result.history)


def test_teacher_metrics_are_its_validation_accuracy(teacher_setup) -> None:
    config = load_config({**teacher_setup["settings"], "epochs": 1, "eps_schedule.start": 1})
    result = train(config)
    teacher = load_teacher(config, DIGITS, torch.device("cpu"))
    val = load_dataset("digits", val_size=config.dataset.val_size, seed=config.seed).val
    expected = evaluate(teacher.model, val, eps=0.1, verifier=None, pgd_steps=5, seed=0)
    metrics = result.history[0]
    assert metrics["teacher_val_clean_acc"] == expected["clean_acc"] > 0.5
    assert metrics["teacher_val_pgd_acc"] == expected["pgd_acc"]


class Interrupt(TrainingCallback):
    def on_epoch_end(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt("simulated kill")


def _comparable(result: RunResult) -> list[dict[str, Any]]:
    timing = ("seconds", "examples_per_second", "teacher_seconds")
    return [{k: v for k, v in m.items() if k not in timing} for m in result.history]


def test_resume_restores_the_projection(teacher_setup, tmp_path) -> None:
    settings = {**teacher_setup["settings"], "epochs": 4, "eval.every": 2, "saad.enabled": True}
    whole = train(load_config({**settings, "checkpoint.dir": str(tmp_path / "a")}))
    interrupted = load_config({**settings, "checkpoint.dir": str(tmp_path / "b")})
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, [Interrupt()])
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert tuple(state["projection"]["weight"].shape) == (64, 100)
    resumed = train(interrupted)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert _comparable(whole) == _comparable(resumed)
    assert whole.final == resumed.final


def test_cli_ensures_the_teacher_before_training(teacher_setup, tmp_path, capsys) -> None:
    keys = ("teacher.name", "teacher.registry", "teacher.cache_dir")
    sets = [f"{key}={teacher_setup['settings'][key]}" for key in keys]
    sets += ["epochs=1", "eps_schedule.start=1", "eps_schedule.length=1"]
    sets += ["eval.final_subset=20", "eval.final_verifier=ibp"]
    argv = [arg for pair in (("--set", s) for s in sets) for arg in pair]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "teacher 'small-pgd' is ready" in printed and "status: completed" in printed
    assert main(["--set", "teacher.name=nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown teacher 'nope'" in capsys.readouterr().err
