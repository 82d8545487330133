"""A sweep config (``sweeps/configs/*.yaml``): everything one sweep needs, validated up front.

``load_sweep(path)`` checks the file, the search space (preset + inline overrides), and the
fixed training settings (merged with one sampled point of the space, so a bad key anywhere
fails before Ray starts). Errors are ``SweepConfigError`` naming the file and the key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from search_spaces import SearchSpace, SearchSpaceError, load_space
from trainables.config import ConfigError, TrainConfig, flatten, load_config
from trainables.results import is_trial_metric

CONFIGS_DIR = Path(__file__).parent / "configs"


def is_uri(storage: str) -> bool:
    """True for ``scheme://...`` other than ``file://`` (a remote or in-memory filesystem)."""
    return "://" in storage and not storage.startswith("file://")


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
            " test_cert_acc, val_pgd_acc, wall_time_s, device_hours, loss)"
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
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str = Field("sweeps-results", description="local path or URI (s3://, gs://, ...)")
    training: dict[str, Any] = Field(default_factory=dict, description="fixed settings")
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="val_clean_acc"),
            Objective(metric="val_cert_acc"),
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

    @model_validator(mode="after")
    def _durable_study_needs_a_path(self) -> SweepConfig:
        if self.optuna_storage != "none" and is_uri(self.storage):
            raise ValueError(
                f"optuna_storage={self.optuna_storage!r} writes a local file, but storage"
                f" {self.storage!r} is a URI: use a path (a shared filesystem on a cluster)"
                " or optuna_storage: none"
            )
        return self

    def training_config(self, params: dict[str, Any] | None = None) -> TrainConfig:
        """The training config of one trial: fixed settings, then the sampled ``params``."""
        return load_config(self.training, params)

    def search_space(self, source: str = "the sweep config") -> SearchSpace:
        return load_space(self.space.preset, self.space.overrides, overrides_source=source)


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read and fully validate a sweep config (``overrides``: top-level keys, e.g. storage)."""
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(f"sweep config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SweepConfigError(f"sweep config {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise SweepConfigError(f"sweep config {path} must hold a mapping")
    raw.update(overrides or {})
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as err:
        raise SweepConfigError(_describe(err, path)) from None
    _check_training_and_space(sweep, path)
    return sweep


def _check_training_and_space(sweep: SweepConfig, path: Path) -> None:
    """Validate the fixed settings alone and with sampled points of the space."""
    try:
        base = sweep.training_config()
        space = sweep.search_space(f"{path} (space.overrides)")
        space.validate_against(flatten(base.model_dump()).keys(), extra_keys=["model.options.*"])
        fixed = set(flatten(sweep.training)) & set(space.keys())
        if fixed:
            raise SweepConfigError(f"{path}: training fixes searched key(s) {sorted(fixed)}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(8):  # random points reach most conditional branches
            sweep.training_config(space.sample_config(study.ask()))
    except ConfigError as err:
        raise SweepConfigError(f"{path}: training settings (key 'training'):\n{err}") from None
    except SearchSpaceError as err:
        raise SweepConfigError(f"{path}: search space (key 'space'):\n{err}") from None


def _describe(err: ValidationError, path: Path) -> str:
    lines = [f"invalid sweep config {path}:"]
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)
