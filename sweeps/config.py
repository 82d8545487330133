"""A sweep config (``sweeps/configs/*.yaml``): everything one sweep needs, validated up front.

``load_sweep(path)`` checks everything that does not depend on the machine and reports every
problem at once, each naming the file and the key, before Ray starts (``sweeps.checks``
says what is checked). ``check_sweep(path, runs_here=...)`` also returns warnings (search
parameters that can never be suggested, data that is not on this machine); ``runs_here``
(a local ``sweeps run``) makes a missing dataset or an absent device an error.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from search_spaces import SearchSpace, SearchSpaceError, load_space
from sweeps.checks import SweepCheck, complete_point
from sweeps.trackers import Tracker, check_trackers
from trainables.config import TrainConfig, flatten, load_config, unflatten
from trainables.config_io import describe_errors, read_yaml_mapping
from trainables.results import FINAL_VAL_CERT, is_trial_metric
from trainables.results.storage import is_remote

#: A sweep name is a folder under the storage: no path separators, no "." or ".." alone.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def on_cluster() -> bool:
    """Whether ``sweeps run`` joins a Ray cluster (``RAY_ADDRESS``, set by ``ray job submit``)
    rather than starting a local Ray on this machine."""
    return bool(os.environ.get("RAY_ADDRESS"))


class SweepConfigError(ValueError):
    """A sweep config is invalid; the message names the file and every bad key path."""


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _reported_metric(name: str) -> str:
    """Objectives and constraints must name a metric trials report (a typo would make every
    trial "complete" with a made-up worst value)."""
    if not is_trial_metric(name):
        raise ValueError(
            f"{name!r} is no metric a trial reports (e.g. val_clean_acc, val_cert_acc,"
            " val_final_cert_acc, test_cert_acc, val_pgd_acc, wall_time_s, device_hours, loss)"
        )
    return name


class Objective(_Group):
    metric: str
    mode: Literal["max", "min"] = "max"

    _known = field_validator("metric")(_reported_metric)


class SpaceConfig(_Group):
    preset: str = "certified"
    overrides: dict[str, Any] = Field(default_factory=dict, description="key -> spec or null")


class SamplerConfig(_Group):
    name: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    seed: int = Field(0, ge=0)


class Resources(_Group):
    workers: int = Field(1, ge=1, description="DDP processes per trial")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _whole_gpus_for_ddp(self) -> Resources:
        if self.workers > 1 and self.gpus_per_worker not in (0, int(self.gpus_per_worker)):
            raise ValueError("fractional GPUs per DDP worker break NCCL: use whole GPUs")
        return self


class EarlyStopping(_Group):
    kind: Literal["none", "asha", "mo-asha"] = "none"
    grace_period: int = Field(1, ge=1, description="epochs before the first rung")
    reduction_factor: int = Field(3, ge=2)


class Constraint(_Group):
    metric: str
    min: float

    _known = field_validator("metric")(_reported_metric)


class SweepConfig(_Group):
    name: str = Field(description="a folder name under the storage: letters, digits, _ . -")
    storage: str = Field("sweeps-results", description="local path or URI (s3://, gs://, ...)")
    training: dict[str, Any] = Field(default_factory=dict, description="fixed settings")
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="val_clean_acc"),
            Objective(metric=FINAL_VAL_CERT),
        ],
        min_length=1,
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    num_trials: int = Field(16, ge=1)
    max_concurrent: int | None = Field(None, ge=1, description="default: from resources")
    resources: Resources = Field(default_factory=Resources)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    max_failures: int = Field(1, ge=0, description="retries of a failed trial")
    constraints: list[Constraint] = Field(default_factory=list)
    report_every_s: float = Field(60.0, gt=0, description="print the front this often")
    optuna_storage: Literal["none", "journal", "sqlite"] = Field(
        "none", description="durable study under <storage>/<name>/ (local storage paths only)"
    )
    loggers: list[Tracker] = Field(
        default_factory=list, description="experiment trackers: mlflow, tensorboard, wandb"
    )
    _space: tuple[SpaceConfig, SearchSpace] | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _stays_inside_the_storage(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a sweep name: the name is a folder under the storage, so"
                " it is 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit"
                " (no '/', no '.' or '..')"
            )
        return value

    @model_validator(mode="after")
    def _durable_study_needs_a_path(self) -> SweepConfig:
        if self.optuna_storage != "none" and is_remote(self.storage):
            raise ValueError(
                f"optuna_storage={self.optuna_storage!r} writes a local file, but storage"
                f" {self.storage!r} is a URI: use a path (a shared filesystem on a cluster)"
                " or optuna_storage: none"
            )
        return self

    @model_validator(mode="after")
    def _trackers_can_write(self) -> SweepConfig:
        check_trackers(self.loggers, is_remote(self.storage))
        return self

    def training_config(self, params: dict[str, Any] | None = None) -> TrainConfig:
        """The training config of one trial: fixed settings, then the sampled ``params``.

        Searched keys that ``params`` leaves out but that would be active take the space's
        representative value (the default when inside the range, else the low end or the
        first choice), so ``training_config()`` is a config some trial really can have.
        """
        space = self.search_space()
        fixed = flatten(unflatten(self.training))
        return load_config(self.training, complete_point(space, params or {}, fixed))

    def search_space(self, source: str = "the sweep config") -> SearchSpace:
        """The search space (loaded once per ``space`` setting; ``source`` names the
        overrides in errors)."""
        if self._space is None or self._space[0] != self.space:
            space = load_space(self.space.preset, self.space.overrides, overrides_source=source)
            self._space = (self.space.model_copy(deep=True), space)
        return self._space[1]


@dataclass(frozen=True)
class CheckedSweep:
    """A validated sweep and the warnings it raised (printed by ``python -m sweeps``)."""

    sweep: SweepConfig
    warnings: list[str]


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read and fully validate a sweep config (``overrides``: top-level keys, e.g. storage)."""
    return check_sweep(path, overrides).sweep


def check_sweep(
    path: str | Path, overrides: dict[str, Any] | None = None, *, runs_here: bool = False
) -> CheckedSweep:
    """``load_sweep`` plus warnings; ``runs_here``: the trials run on this machine (a local
    ``sweeps run``), so a missing dataset or device is an error, not a warning."""
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep config", SweepConfigError)
    for key, value in (overrides or {}).items():
        set_key(raw, key, value)
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as err:
        lines = [_from_command_line(line, overrides) for line in describe_errors(err, SweepConfig)]
        raise SweepConfigError("\n".join([f"invalid sweep config {path}:", *lines])) from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            space = sweep.search_space(f"{path}: space.overrides")
        except SearchSpaceError as err:
            text = "\n".join(f"  {line}" for line in f"space: {err}".splitlines())
            raise SweepConfigError(f"invalid sweep config {path}:\n{text}") from None
    problems, found = SweepCheck(
        sweep.training,
        space,
        overridden={key for key, spec in sweep.space.overrides.items() if spec is not None},
        preset=sweep.space.preset,
        gpus_per_worker=sweep.resources.gpus_per_worker,
        runs_here=runs_here,
    ).run()
    problems = problems or final_metric_problems(sweep)  # needs a config that loads
    if problems:
        raise SweepConfigError("\n".join([f"invalid sweep config {path}:", *problems]))
    never = [f"space: {w.message}" for w in caught if issubclass(w.category, UserWarning)]
    return CheckedSweep(sweep, never + found)


def final_metric_problems(sweep: SweepConfig) -> list[str]:
    """Objectives and constraints measured by the final verifier need one, and early stopping
    on such an objective needs its per-epoch stand-in (``trainables.tune.stopping_metrics``)."""
    evaluation = sweep.training_config().eval
    problems = []
    for group, items in (("objectives", sweep.objectives), ("constraints", sweep.constraints)):
        for i, item in enumerate(items):
            if item.metric.startswith("val_final_") and evaluation.final_verifier is None:
                problems.append(
                    f"  {group}.{i}.metric: {item.metric} is measured by"
                    " training.eval.final_verifier, which is null: set one (e.g. best) or"
                    " use the per-epoch val_cert_acc"
                )
    finals = [o.metric for o in sweep.objectives if o.metric == FINAL_VAL_CERT]
    if finals and sweep.early_stopping.kind != "none" and evaluation.verifier is None:
        problems.append(
            f"  early_stopping.kind: {sweep.early_stopping.kind} compares unfinished trials on"
            f" {evaluation.split}_cert_acc in place of {finals[0]}, but training.eval.verifier"
            " is null: set one (e.g. crown-ibp) or early_stopping.kind: none"
        )
    return problems


#: Groups whose own keys are dotted: ``training.optim.lr`` sets the key ``optim.lr`` there.
DOTTED_GROUPS = ("space.overrides", "training")


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` of a raw sweep config (``sampler.seed``, ``training.optim.lr``,
    ``space.overrides.optim.lr``); ``SweepConfigError`` when a key on the way is no mapping."""
    parts = key.split(".")
    for group in DOTTED_GROUPS:
        if key.startswith(group + "."):
            parts = [*group.split("."), key[len(group) + 1 :]]
            break
    target = raw
    for depth, part in enumerate(parts[:-1]):
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            where = ".".join(parts[: depth + 1])
            raise SweepConfigError(f"--set {key}: {where} is not a mapping in the sweep config")
    target[parts[-1]] = value


def _from_command_line(line: str, overrides: dict[str, Any] | None) -> str:
    for key in overrides or {}:
        if line.startswith((f"  {key}:", f"  {key}.")):
            return f"{line} (given on the command line)"
    return line
