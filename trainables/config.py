"""The training configuration: one typed, validated object for every knob of a run.

Nested groups read naturally in YAML; search spaces produce flat dicts, so every key also
has a dotted form (``optim.lr``, ``method.alpha``). Both forms meet in ``load_config``, and
every unknown key or bad value becomes one ``ConfigError`` that names each key path (and
the file) before anything runs: ranges and choices, ``model.name`` / ``dataset.name`` and
their ``options`` against the model zoo and the dataset registry (the model is built on
PyTorch's meta device, so a too-small input or a bad width is caught too), and an eps ramp
that must end within ``epochs``. ``teacher.name`` needs the teacher registry, which sits
above this module: ``trainables.preflight`` checks it, with the device and the data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trainables.certify.verifiers import verifier_type
from trainables.config_fields import did_you_mean
from trainables.config_io import describe_errors, read_yaml_mapping
from trainables.methods import (
    DEFAULT_METHOD,
    METHODS,
    MethodSettings,
    method_settings,
    read_method_group,
)

#: Method families whose training loss uses eps (the eps ramp applies to them).
EPS_FAMILIES = ("certified", "adversarial")


class ConfigError(ValueError):
    """A training config is invalid; the message names every bad key path and the source."""


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Registered(_Group):
    """A group naming an entry of a registry (``name``) with that entry's ``options``."""

    kind: ClassVar[str]

    @staticmethod
    def registry() -> tuple[tuple[str, ...], Callable[[str], list[str]]]:
        """The registry's names and each name's accepted options (imported on use: torch)."""
        raise NotImplementedError

    @field_validator("name", check_fields=False)
    @classmethod
    def _known_name(cls, value: str) -> str:
        known, _ = cls.registry()
        if value not in known:
            hint = did_you_mean(value, known)
            raise ValueError(f"unknown {cls.kind} {value!r}{hint}; known: {', '.join(known)}")
        return value

    @field_validator("options", check_fields=False)
    @classmethod
    def _known_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # the name is invalid: reported already
            return value
        accepted = cls.registry()[1](name)
        unknown = [key for key in value if key not in accepted]
        if unknown:
            shown = [f"{key!r}{did_you_mean(key, accepted)}" for key in unknown[:5]]
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise ValueError(
                f"{cls.kind} {name!r} has no option {', '.join(shown)}{more}; it takes: "
                f"{', '.join(accepted) or 'none'}"
            )
        return value


class DatasetConfig(_Registered):
    kind: ClassVar[str] = "dataset"
    name: str = Field("digits", description="a name of trainables.data.DATASETS")
    root: str | None = Field(None, description="data directory (default: $CERTSWEEP_DATA)")
    val_size: float = Field(0.1, gt=0, lt=1, description="fraction of train held out")
    augment: bool = False
    download: bool = False
    options: dict[str, Any] = Field(default_factory=dict, description="loader-specific")

    @staticmethod
    def registry() -> tuple[tuple[str, ...], Callable[[str], list[str]]]:
        from trainables.data import DATASETS, dataset_options

        return DATASETS, dataset_options


class ModelConfig(_Registered):
    kind: ClassVar[str] = "model"
    name: str = Field("cnn_small", description="a name of trainables.models.MODELS")
    options: dict[str, Any] = Field(default_factory=dict, description="e.g. width")

    @staticmethod
    def registry() -> tuple[tuple[str, ...], Callable[[str], list[str]]]:
        from trainables.models import MODELS, model_options

        return MODELS, model_options


class OptimConfig(_Group):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(5e-4, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(10.0, gt=0, description="max grad norm; null: off")
    schedule: Literal["constant", "milestones", "cosine"] = "milestones"
    milestones: list[float] = Field(
        default_factory=lambda: [0.75, 0.9],
        description="epochs (>= 1) or fractions of the run (< 1) where lr *= decay",
    )
    decay: float = Field(0.2, gt=0, le=1)

    @field_validator("milestones")
    @classmethod
    def _positive_sorted(cls, value: list[float]) -> list[float]:
        if any(m <= 0 for m in value) or value != sorted(value):
            raise ValueError(f"milestones must be positive and increasing, got {value}")
        return value


class AttackConfig(_Group):
    """The PGD attack inside training (the evaluation attack is ``eval.pgd_*``)."""

    steps: int = Field(8, ge=1, le=1000)
    restarts: int = Field(1, ge=1, le=100)
    step_size: float | None = Field(
        None, gt=0, le=100, description="relative to the box half-width; null: 2.5 / steps"
    )
    loss: Literal["ce", "margin"] = "ce"


class EpsScheduleConfig(_Group):
    kind: Literal["smoothed", "linear", "constant"] = "smoothed"
    start: int = Field(1, ge=1, description="1-based epoch where the ramp begins")
    length: int = Field(
        5, ge=1, description="ramp length in epochs; the ramp must end by the last epoch"
    )


class WarmupConfig(_Group):
    """Shi et al.'s warm-up regularisers (certified methods only, during the eps ramp)."""

    weight: float = Field(0.5, ge=0, le=100, description="lambda0; 0 turns them off")
    tau: float = Field(0.5, gt=0, le=10)
    terms: list[Literal["tightness", "relu"]] = Field(default_factory=lambda: ["tightness", "relu"])


class EvalConfig(_Group):
    """Evaluation during and after training (``trainables.evaluation``).

    Verifiers (names of the registry, ``trainables.certify.verifiers``) certify the L-inf
    ball of ``eval_eps``: every epoch any verifier that is not complete (bounds, the ``best``
    cascade, "lipschitz": the global-constant certificate, the only one for ``lip_*``
    models); at the end also complete ones ("milp": exponential in unstable ReLUs, small
    nets, with ``final_subset``; "bab": branch and bound, small CNNs). The default final
    verifier is ``best``: IBP, then CROWN-IBP, CROWN and alpha-CROWN on the samples still
    undecided. Smoothing certifies L2 radii with a
    probability: ``python -m trainables.certify_checkpoint``.
    """

    verifier: str | None = Field(
        "crown-ibp", description="null: no certificate (e.g. residual teachers)"
    )
    split: Literal["val", "test"] = "val"
    subset: int | None = Field(None, ge=1, description="first N examples of the split")
    pgd_steps: int = Field(20, ge=0, le=10000, description="0: no PGD evaluation")
    pgd_restarts: int = Field(1, ge=1, le=100)
    every: int = Field(1, ge=1, description="evaluate every N epochs (and at the end)")
    batch_size: int = Field(256, ge=1)
    final_verifier: str | None = "best"
    final_attack: Literal["pgd", "autoattack"] = Field(
        "pgd", description="autoattack: the standard AutoAttack (needs pyautoattack; slow)"
    )
    milp_time_limit: float = Field(
        10.0, gt=0, le=86400, description="seconds per sample of a complete verifier (milp, bab)"
    )
    alpha_iterations: int = Field(
        20, ge=1, le=1000, description="alpha-CROWN's slope-optimisation steps (alpha-crown, best)"
    )
    final_split: Literal["val", "test"] = "test"
    final_subset: int | None = Field(None, ge=1)

    @field_validator("verifier")
    @classmethod
    def _per_epoch_verifier(cls, name: str | None) -> str | None:
        if name is not None and verifier_type(name).complete:
            raise ValueError(
                f"{name!r} is a complete verifier (exponential time): set it as"
                " eval.final_verifier, which runs once at the end"
            )
        return name

    @field_validator("final_verifier")
    @classmethod
    def _registered_verifier(cls, name: str | None) -> str | None:
        if name is not None:
            verifier_type(name)
        return name


class CheckpointConfig(_Group):
    dir: str | None = Field(None, description="where checkpoints go; null: none are written")
    every: int = Field(1, ge=1, description="write every N epochs (and at the end)")
    resume: bool = Field(True, description="continue from dir's checkpoint if there is one")


class TeacherConfig(_Group):
    """Which teacher to distil from (``trainables.teachers``); "none": plain certified training."""

    name: str = Field("none", min_length=1, description="none, or a teacher registry entry")
    registry: str | None = Field(None, description="YAML file with more registry entries")
    cache_dir: str | None = Field(
        None, description="trained recipe teachers; null: $CERTSWEEP_TEACHERS or ~/.cache/..."
    )


class DistillConfig(_Group):
    """The distillation term added to the certified loss (used when a teacher is named)."""

    objective: Literal["feature", "logit"] = "feature"
    beta: float = Field(1.0, ge=0, le=1e4, description="weight of the distillation term")
    alpha: float | None = Field(
        None,
        ge=0,
        le=1,
        description="feature term's bound weight; null: method.alpha (0.5 for methods without)",
    )
    layer: str = Field("penultimate", min_length=1, description="student feature (by name)")
    teacher_layer: str = Field("penultimate", min_length=1, description="teacher feature")
    distance: Literal["l2", "cosine"] = Field("l2", description="feature objective only")
    projection: bool | Literal["auto"] = Field(
        "auto", description="learned linear map student -> teacher features; auto: if dims differ"
    )
    temperature: float = Field(1.0, gt=0, le=100, description="logit KL and SAAD clean term")
    inputs: Literal["clean", "adv", "both", "ibp"] = Field(
        "adv", description="logit objective: the student logits the KL compares"
    )


class SaadConfig(_Group):
    """SAAD per-sample weights from the teacher's response to the student's x_adv."""

    enabled: bool = False
    weighting: Literal["entropy", "transfer", "margin"] = "entropy"
    gamma: float = Field(1.0, gt=0, le=100, description="Renyi order of the entropy; 1: Shannon")
    scale: float = Field(5.0, gt=0, le=1e4, description="s: weights are s x the score")
    on_certified: bool = Field(False, description="weight the certified term per sample too")
    clean_weight: float = Field(
        0.0, ge=0, le=1e4, description="inverse-weighted clean KL term's weight"
    )
    attack: Literal["step", "teacher_kl"] = Field(
        "step",
        description="x_adv of the distillation terms: the step's PGD, or SAAD's own attack"
        " (KL to the teacher's linearised clean logits)",
    )
    attack_steps: int = Field(10, ge=1, le=1000, description="teacher_kl attack: sign steps")
    attack_step_size: float = Field(
        0.25, gt=0, le=100, description="teacher_kl attack: step / box half-width (2/255 at 8/255)"
    )
    linearisation: float = Field(
        1.0, ge=0, le=100, description="teacher_kl attack: weight of the true-class correction"
    )
    igdm_weight: float = Field(
        0.0, ge=0, le=1e4, description="IGDM gradient-matching term, times epoch / epochs"
    )


class TrainConfig(_Group):
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    eps: float = Field(0.1, ge=0, le=1, description="train eps (L-inf, pixels in [0, 1])")
    test_eps: float | None = Field(None, ge=0, le=1, description="null: same as eps")
    epochs: int = Field(10, ge=1, le=100000)
    batch_size: int = Field(64, ge=1)
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    init: Literal["default", "shi"] = "shi"
    bn_stats: Literal["clean", "own", "adversarial"] = Field(
        "clean",
        description="clean: every training pass normalises with the clean batch's statistics;"
        " own: each forward pass with its own batch's; adversarial: the bounds with the"
        " adversarial pass's (expressive-losses)",
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    method: MethodSettings = Field(default_factory=METHODS[DEFAULT_METHOD])
    attack: AttackConfig = Field(default_factory=AttackConfig)
    eps_schedule: EpsScheduleConfig = Field(default_factory=EpsScheduleConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    saad: SaadConfig = Field(default_factory=SaadConfig)

    @field_validator("method", mode="before")
    @classmethod
    def _read_method_group(cls, value: Any) -> Any:
        return read_method_group(value)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
        return value

    @model_validator(mode="after")
    def _ramp_fits(self) -> TrainConfig:
        schedule = self.eps_schedule
        if not ramp_applies(schedule.kind, self.method.name, self.eps):
            return self
        end = schedule.start + schedule.length - 1
        if end > self.epochs:
            raise ValueError(
                f"eps_schedule.start={schedule.start} + eps_schedule.length={schedule.length}"
                f" - 1 = epoch {end}, after the last epoch (epochs={self.epochs}): training"
                f" would stop before eps reaches {self.eps}; shorten the ramp, start it"
                " earlier, raise epochs, or use eps_schedule.kind: constant"
            )
        return self

    @model_validator(mode="after")
    def _model_fits_data(self) -> TrainConfig:
        _check_model_on_data(
            self.model.name,
            _frozen(self.model.options),
            self.dataset.name,
            _frozen(self.dataset.options),
        )
        return self

    @model_validator(mode="after")
    def _distillation_fits(self) -> TrainConfig:
        if self.teacher.name != "none" and self.method.family != "certified":
            raise ValueError(
                f"teacher.name={self.teacher.name!r}: distillation needs a certified method,"
                f" not method.name={self.method.name!r}"
            )
        if self.saad.enabled and self.teacher.name == "none":
            raise ValueError("saad.enabled needs a teacher (teacher.name is 'none')")
        return self

    @property
    def distilling(self) -> bool:
        return self.teacher.name != "none"

    @property
    def eval_eps(self) -> float:
        return self.eps if self.test_eps is None else self.test_eps

    def flat(self) -> dict[str, Any]:
        """The config as a flat dict with dotted keys (the inverse of ``load_config``)."""
        return flatten(self.model_dump())


def config_keys() -> set[str]:
    """Every flat key a training config can hold, with every method's settings
    (``method.<setting>``); what a search space may name (``model.options`` is free-form)."""
    keys = set(TrainConfig().flat())
    keys |= {f"method.{key}" for keys_ in method_settings().values() for key in keys_}
    return keys


def ramp_applies(kind: str, method: str, eps: float) -> bool:
    """Whether the eps ramp must end within the run: a ramping schedule of a method that
    trains at eps (a family in ``EPS_FAMILIES``), for a positive eps."""
    trains_at_eps = method in METHODS and METHODS[method].family in EPS_FAMILIES
    return kind != "constant" and trains_at_eps and eps > 0


def _frozen(options: Mapping[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=repr)


@lru_cache(maxsize=256)
def _check_model_on_data(model: str, options: str, dataset: str, data_options: str) -> None:
    """Build the model for the dataset's input on the meta device (cached: configs repeat)."""
    from trainables.data import dataset_shape
    from trainables.models import check_model

    try:
        input_shape, num_classes = dataset_shape(dataset, **json.loads(data_options))
    except ValueError as err:
        raise ValueError(f"dataset.options: {err}") from None
    try:
        check_model(model, input_shape, num_classes, **json.loads(options))
    except ValueError as err:
        raise ValueError(
            f"model.options: {err} (for the {'x'.join(map(str, input_shape))} input of {dataset})"
        ) from None


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; free-form ``options`` dicts are flattened too."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Merge dotted keys into nested dicts; plain nested values are kept as they are."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = nested
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"config key {key!r}: {where!r} is a value, not a group")
            node = child
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf].update(unflatten(value))
        else:
            node[leaf] = unflatten(value) if isinstance(value, Mapping) else value
    return nested


def load_config(
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Build a validated ``TrainConfig`` from a YAML file, a (flat or nested) dict, or nothing.

    ``overrides`` (dotted keys, e.g. from ``--set`` or a search space) are applied last.
    """
    where = "the config"
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data = unflatten(source)
    else:
        where = str(source)
        data = _read_yaml(Path(source))
    if overrides:
        data = unflatten({**flatten(data), **overrides})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, where)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    return unflatten(read_yaml_mapping(path, "config file", ConfigError))


def _describe(err: ValidationError, where: str) -> str:
    return "\n".join([f"invalid training config in {where}:", *describe_errors(err, TrainConfig)])
