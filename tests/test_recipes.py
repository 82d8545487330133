"""Published recipes: the ready sweep configs and the generic teacher recipes.

The expected values are the sources' own numbers, copied here once so that an edit of a
ready config that drifts from its source fails: expressive-losses' README commands
(train.py flags), its ``config/*.json`` batch sizes and ``argparser.py`` defaults; Madry
et al.'s ``cifar10_challenge/config.json`` and TRADES' ``train_trades_cifar10.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sweeps.config import load_sweep
from trainables.config import load_config
from trainables.teachers.registry import resolve_teacher

CONFIGS = Path(__file__).resolve().parents[1] / "sweeps" / "configs"

#: Shared by every expressive-losses command: Adam 5e-4, LR x0.2 at the milestones,
#: grad-norm clip 10, Shi et al.'s init, bounds with the adversarial pass's BN statistics.
COMMON = {
    "optim.name": "adam",
    "optim.lr": 5e-4,
    "optim.decay": 0.2,
    "optim.grad_clip": 10.0,
    "init": "shi",
    "bn_stats": "adversarial",
    "model.name": "cnn7",
}
ONE_STEP = {"attack.steps": 1, "attack.step_size": 10.0, "method.attack_eps_factor": 1.0}
MNIST = {**COMMON, **ONE_STEP, "epochs": 70, "batch_size": 256, "optim.milestones": [50, 60]}
#: (config file, fixed keys of the published recipe)
RECIPES: dict[str, dict[str, Any]] = {
    "mnist_0.1.yaml": {**MNIST, "eps": 0.1, "method.train_eps_factor": 2.0},
    "mnist_0.3.yaml": {**MNIST, "eps": 0.3, "method.train_eps_factor": 1.334},
    "cifar10_2_255.yaml": {
        **COMMON,
        "eps": 2 / 255,
        "epochs": 160,
        "batch_size": 128,
        "optim.milestones": [120, 140],
        "attack.steps": 8,
        "attack.step_size": 0.25,
        "method.attack_eps_factor": 2.1,
        "method.train_eps_factor": 1.0,
    },
    "cifar10_8_255.yaml": {
        **COMMON,
        **ONE_STEP,
        "eps": 8 / 255,
        "epochs": 260,
        "batch_size": 128,
        "optim.milestones": [180, 220],
        "method.train_eps_factor": 1.0,
    },
    "tinyimagenet_1_255.yaml": {
        **COMMON,
        **ONE_STEP,
        "model.name": "cnn7_tin",
        "eps": 1 / 255,
        "epochs": 160,
        "batch_size": 128,
        "optim.milestones": [120, 140],
        "method.train_eps_factor": 1.0,
    },
}
#: (config, searched key, published anchor that the searched range must contain)
ANCHORS = [
    ("mnist_0.1.yaml", "eps_schedule.start", 1),
    ("mnist_0.1.yaml", "eps_schedule.length", 20),
    ("cifar10_2_255.yaml", "eps_schedule.start", 2),
    ("cifar10_2_255.yaml", "eps_schedule.length", 80),
    ("cifar10_2_255.yaml", "method.alpha", 4e-3),
    ("cifar10_8_255.yaml", "method.alpha", 0.5),
    ("tinyimagenet_1_255.yaml", "warmup.weight", 0.2),
    ("tinyimagenet_1_255.yaml", "method.alpha", 1e-2),
]


def _contains(parameter, value) -> bool:
    if hasattr(parameter, "choices"):
        return value in parameter.choices
    return parameter.low <= value <= parameter.high


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_ready_configs_fix_the_published_recipe_or_search_around_it(name: str) -> None:
    """A recipe value is either the fixed setting or inside the searched range."""
    sweep = load_sweep(CONFIGS / name)
    config = sweep.training_config().flat()
    space = sweep.search_space()
    for key, value in RECIPES[name].items():
        if key in space.parameters:
            assert _contains(space.parameters[key], value), (name, key, value)
        elif isinstance(value, str):
            assert config[key] == value, (name, key)
        else:
            assert config[key] == pytest.approx(value, rel=1e-3), (name, key)
    fixed = set(ONE_STEP) | {"attack.steps", "bn_stats", "optim.milestones", "epochs"}
    assert not fixed & set(space.parameters), f"{name}: the attack and schedule are fixed"


@pytest.mark.parametrize(("name", "key", "anchor"), ANCHORS)
def test_searched_ranges_contain_the_published_anchor(name: str, key: str, anchor) -> None:
    parameter = load_sweep(CONFIGS / name).search_space().parameters[key]
    assert _contains(parameter, anchor)


@pytest.mark.parametrize("method", ["pgd-at", "trades"])
def test_generic_teacher_recipe_is_adversarial_training_not_the_students(method: str) -> None:
    student = load_config(
        {
            "eps": 0.2,
            "epochs": 30,
            "batch_size": 32,
            "optim.lr": 1e-3,
            "eps_schedule.start": 3,
            "teacher.name": method,
        }
    )
    recipe = resolve_teacher(student).recipe
    optim = recipe.optim
    assert (optim.name, optim.lr, optim.momentum, optim.weight_decay) == ("sgd", 0.1, 0.9, 2e-4)
    assert optim.grad_clip is None and optim.decay == 0.1
    assert optim.milestones == ([0.5, 0.75] if method == "pgd-at" else [75 / 80])
    assert recipe.eps_schedule.kind == "constant"  # fixed eps, no ramp
    assert (recipe.eps, recipe.epochs, recipe.batch_size) == (0.2, 30, 32)  # the student's
    assert recipe.attack.steps == 10
    assert recipe.attack.step_size == pytest.approx(0.25 if method == "pgd-at" else 0.007 / 0.031)
