"""The teacher registry: what ``teacher.name`` means, and where its weights live.

An entry is either a trained network (an architecture of the model zoo plus a checkpoint
path or URI) or a training recipe (a training config with an adversarial method) whose
result is cached under the hash of the recipe, so that every trial naming it shares one
teacher. Entries come from three places, first match wins:

* the YAML file ``teacher.registry``::

      teachers:
        wrn-pgd:                      # a trained network
          model: wide_resnet
          options: {depth: 16, width: 4}
          checkpoint: s3://bucket/teachers/wrn.pt
        cnn7-trades:                  # a recipe: training-config keys, nested or dotted
          recipe: {method.name: trades, model.name: cnn7, dataset.name: cifar10, epochs: 100}

* the built-in recipes ``pgd-at-digits``, ``trades-digits`` and ``pgd-at-digits-fast``
  (``BUILTIN_RECIPES``);
* the generic form ``<method>`` or ``<method>:<model>`` (method ``pgd-at`` or ``trades``): a
  recipe with the student's dataset, eps, epochs, batch size, optimiser, eps schedule and
  attack, and the student's model (or ``<model>`` with its default options), seed 0.

Recipes start from the training config's defaults except ``TEACHER_DEFAULTS``: evaluation
certifies nothing (residual teachers have no bounds) and the default initialisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from trainables.config import (
    ADVERSARIAL_METHODS,
    ConfigError,
    TrainConfig,
    flatten,
    load_config,
    unflatten,
)
from trainables.config_fields import did_you_mean
from trainables.config_io import describe_errors, read_yaml_mapping

#: File name of a trained recipe teacher inside its cache folder.
TEACHER_FILE = "teacher.pt"

#: Keys every recipe starts from, before its own keys.
TEACHER_DEFAULTS: dict[str, Any] = {
    "init": "default",
    "eval.verifier": None,
    "eval.final_verifier": None,
}

_DIGITS_RECIPE: dict[str, Any] = {
    "dataset.name": "digits",
    "model.name": "cnn_small",
    "eps": 0.1,
    "epochs": 20,
    "batch_size": 64,
    "optim.lr": 5e-3,
    "optim.milestones": [0.6, 0.8],
    "eps_schedule.start": 2,
    "eps_schedule.length": 8,
}

#: A cheaper digits teacher for the demo sweep's time budget: fewer epochs and attack steps.
_FAST_DIGITS_RECIPE: dict[str, Any] = {
    **_DIGITS_RECIPE,
    "epochs": 8,
    "eps_schedule.start": 1,
    "eps_schedule.length": 3,
    "attack.steps": 5,
}

BUILTIN_RECIPES: dict[str, dict[str, Any]] = {
    "pgd-at-digits": {**_DIGITS_RECIPE, "method.name": "pgd-at"},
    "trades-digits": {**_DIGITS_RECIPE, "method.name": "trades"},
    "pgd-at-digits-fast": {**_FAST_DIGITS_RECIPE, "method.name": "pgd-at"},
}

#: Student keys a generic recipe (``pgd-at``, ``trades:cnn7``) takes over.
INHERITED_KEYS = ("dataset", "eps", "test_eps", "epochs", "batch_size", "optim", "eps_schedule")
_GENERIC = re.compile(rf"(?P<method>{'|'.join(ADVERSARIAL_METHODS)})(?::(?P<model>\w+))?")

#: Config keys that do not change the trained teacher (left out of the recipe hash); the
#: distillation groups do not apply to the adversarial methods recipes train with.
_UNHASHED = ("checkpoint", "device", "num_workers", "teacher", "distill", "saad")


class TeacherError(RuntimeError):
    """A teacher cannot be resolved, read or trained; the message names the entry and file."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckpointEntry(_Entry):
    model: str
    options: dict[str, Any] = {}
    checkpoint: str


class RecipeEntry(_Entry):
    recipe: dict[str, Any]


@dataclass(frozen=True)
class TeacherSpec:
    """A resolved registry entry: how to build the teacher and where its weights are."""

    name: str
    model: str
    options: dict[str, Any]
    location: str  # checkpoint path or URI; for recipes, the cache file (maybe not there yet)
    source: str  # where the entry came from, for messages
    recipe: TrainConfig | None = field(default=None, repr=False)


def teacher_cache_dir(config: TrainConfig) -> Path:
    """``teacher.cache_dir``, else ``$CERTSWEEP_TEACHERS``, else ``~/.cache/certsweep/teachers``."""
    if config.teacher.cache_dir is not None:
        return Path(config.teacher.cache_dir).expanduser()
    if os.environ.get("CERTSWEEP_TEACHERS"):
        return Path(os.environ["CERTSWEEP_TEACHERS"]).expanduser()
    return Path.home() / ".cache" / "certsweep" / "teachers"


def recipe_hash(recipe: TrainConfig) -> str:
    """A short hash of everything in a recipe that changes the trained teacher."""
    dump = {k: v for k, v in recipe.model_dump(mode="json").items() if k not in _UNHASHED}
    text = json.dumps(dump, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_teacher(config: TrainConfig) -> TeacherSpec:
    """The registry entry ``config.teacher.name`` names (see the module docstring)."""
    name = config.teacher.name
    if name == "none":
        raise TeacherError("teacher.name is 'none': there is no teacher to resolve")
    registry = config.teacher.registry
    entries = read_registry(registry) if registry is not None else {}
    if name in entries:
        entry, source = entries[name], f"registry {registry}"
        if isinstance(entry, CheckpointEntry):
            return TeacherSpec(name, entry.model, entry.options, entry.checkpoint, source)
        recipe = entry.recipe
    elif name in BUILTIN_RECIPES:
        recipe, source = BUILTIN_RECIPES[name], "built-in recipe"
    elif match := _GENERIC.fullmatch(name):
        recipe, source = _generic_recipe(config, match["method"], match["model"]), "generic"
    else:
        available = [*entries, *BUILTIN_RECIPES, "pgd-at[:<model>]", "trades[:<model>]"]
        where = f" (registry {registry})" if registry else ""
        hint = did_you_mean(name, [*entries, *BUILTIN_RECIPES, *ADVERSARIAL_METHODS])
        raise TeacherError(
            f"unknown teacher {name!r}{where}{hint}; available: {', '.join(available)}"
        )
    trained = _recipe_config(name, recipe, source)
    location = teacher_cache_dir(config) / recipe_hash(trained) / TEACHER_FILE
    model = trained.model
    return TeacherSpec(name, model.name, model.options, str(location), source, trained)


def read_registry(path: str | os.PathLike[str]) -> dict[str, CheckpointEntry | RecipeEntry]:
    """Parse a registry YAML file; any problem is one ``TeacherError`` naming file and entry."""
    data = read_yaml_mapping(path, "teacher registry", TeacherError)
    teachers = data.get("teachers")
    if not isinstance(teachers, dict):
        raise TeacherError(f"teacher registry {path} needs a mapping under the key 'teachers'")
    entries: dict[str, CheckpointEntry | RecipeEntry] = {}
    for name, raw in teachers.items():
        kind = RecipeEntry if isinstance(raw, dict) and "recipe" in raw else CheckpointEntry
        try:
            entries[str(name)] = kind.model_validate(raw)
        except ValidationError as err:
            raise TeacherError(
                "\n".join(
                    [
                        f"teacher registry {path}, entry {name!r} (an entry has either model +"
                        " checkpoint, or recipe):",
                        *describe_errors(err, kind),
                    ]
                )
            ) from None
    return entries


def _generic_recipe(config: TrainConfig, method: str, model: str | None) -> dict[str, Any]:
    student = config.model_dump(mode="json")
    recipe = {key: student[key] for key in INHERITED_KEYS}
    recipe["model"] = student["model"] if model in (None, config.model.name) else {"name": model}
    recipe["method"] = {"name": method}
    return recipe


def _recipe_config(name: str, recipe: dict[str, Any], source: str) -> TrainConfig:
    try:
        trained = load_config({**TEACHER_DEFAULTS, "seed": 0}, overrides=flatten(unflatten(recipe)))
    except ConfigError as err:
        raise TeacherError(f"teacher {name!r} ({source}): bad recipe: {err}") from None
    if trained.method.name not in ADVERSARIAL_METHODS:
        raise TeacherError(
            f"teacher {name!r} ({source}): a recipe trains with {' or '.join(ADVERSARIAL_METHODS)},"
            f" not method.name={trained.method.name!r}"
        )
    return trained
