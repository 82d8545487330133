"""Search spaces as data: typed parameter specs, a YAML loader, and the Optuna translation.

A space is an ordered mapping from dotted training-config keys (``optim.lr``) to specs, so a
sampled point is directly a flat override dict for ``trainables.config.load_config``. Order
matters because Optuna spaces are define-by-run: a parameter's ``when`` conditions may only
name parameters defined before it, and are evaluated on the values sampled so far.

Ray's ``OptunaSearch(space=fn)`` contract (ray 2.60, ``ray/tune/search/optuna/optuna_search.py``):
``fn`` receives a wrapper around the ``optuna.Trial`` that records the return value of every
``suggest_*`` call by its ``name``; ``fn`` may return ``None`` or a dict of constants with
``str`` keys. The trial config is ``{**recorded, **constants}`` passed through
``unflatten_dict`` with the delimiter ``"/"``: dotted keys stay flat, a key holding ``"/"``
would become a nested dict, and a constant would silently overwrite a suggested value of
the same name. The searcher pickles ``fn`` with plain ``pickle`` when the experiment
checkpoints, so ``fn`` must not be a closure (``DefineByRun`` is a module-level class).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from trainables.config_fields import did_you_mean
from trainables.config_io import describe_errors, read_yaml_mapping

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

PRESETS_DIR = Path(__file__).with_name("presets")

#: A categorical choice or a condition value: what Optuna's categorical distribution stores.
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None

_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

#: Choices of one categorical parameter: more is refused (an int or float range, or a
#: file of configs, is the tool for that); validation is linear up to this size.
MAX_CHOICES = 10_000


class SearchSpaceError(ValueError):
    """A search space is invalid; the message names the file (or overrides) and the key path."""


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` and ``1`` apart (Python's ``==`` does not)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _identity(value: Any) -> tuple[bool, Any]:
    """A hashable key with ``_same`` semantics: equal keys exactly when ``_same``."""
    return isinstance(value, bool), value


class Condition(BaseModel):
    """One ``when`` entry: the referenced parameter's value is (``not``) one of ``values``.

    YAML forms: a scalar, a list of scalars, or ``{not: scalar-or-list}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: tuple[Scalar, ...] = Field(min_length=1)
    negate: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping) and "values" in raw:
            return raw  # the field form, e.g. Condition(values=("sabr",))
        if isinstance(raw, Mapping):
            if set(raw) != {"not"}:
                raise ValueError(
                    "a condition is a value, a list of values, or {not: value-or-list}, "
                    f"got a mapping with keys {sorted(map(str, raw))}"
                )
            raw, negate = raw["not"], True
        else:
            negate = False
        values = raw if isinstance(raw, list | tuple) else [raw]
        return {"values": values, "negate": negate}

    @model_serializer
    def _to_yaml(self) -> Any:
        values = list(self.values)
        return {"not": values} if self.negate else values

    def holds(self, value: Any) -> bool:
        return any(_same(value, v) for v in self.values) != self.negate


class _Param(BaseModel):
    """What every parameter type shares: its conditions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: dict[str, Condition] = Field(
        default_factory=dict, description="every condition must hold for it to be suggested"
    )


class FloatParam(_Param):
    """``trial.suggest_float``: a continuous range, log-uniform with ``log``, or a grid."""

    type: Literal["float"] = "float"
    low: FiniteFloat
    high: FiniteFloat
    log: bool = False
    step: FiniteFloat | None = Field(None, gt=0, description="a grid low, low + step, ...")

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log (Optuna rejects it)")
        return self

    def suggest(self, trial: BaseTrial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class IntParam(_Param):
    """``trial.suggest_int``: an integer range with a step, or log-uniform."""

    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step must be 1 with log (Optuna rejects anything else)")
        return self

    def suggest(self, trial: BaseTrial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


class CategoricalParam(_Param):
    """``trial.suggest_categorical``: the only type a condition may refer to (exact values)."""

    type: Literal["categorical"] = "categorical"
    choices: tuple[Scalar, ...] = Field(min_length=1)

    @field_validator("choices", mode="before")
    @classmethod
    def _not_too_many(cls, raw: Any) -> Any:
        if isinstance(raw, list | tuple) and len(raw) > MAX_CHOICES:
            raise ValueError(
                f"{len(raw):,} choices: at most {MAX_CHOICES:,} are allowed (use an int or"
                " float range for more values)"
            )
        return raw

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        seen: set[tuple[bool, Any]] = set()
        for choice in self.choices:
            key = _identity(choice)
            if key in seen:
                raise ValueError(f"duplicate choice {choice!r}")
            seen.add(key)
        return self

    def suggest(self, trial: BaseTrial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


def _check_range(low: float, high: float, log: bool) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be < high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, got low={low}")


AnyParam = FloatParam | IntParam | CategoricalParam
ParamSpec = Annotated[AnyParam, Field(discriminator="type")]
_PARAM_TYPES: dict[str, type[AnyParam]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
}


class SearchSpace(BaseModel):
    """An ordered, validated space; ``define_by_run`` hands it to Ray's ``OptunaSearch``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("search space", description="preset name or file, for messages")
    parameters: dict[str, ParamSpec]

    @model_validator(mode="after")
    def _structure(self) -> SearchSpace:
        problems = _structure_problems(self.parameters)
        if problems:
            raise ValueError("; ".join(f"{key}: {problem}" for key, problem in problems))
        return self

    def keys(self) -> list[str]:
        """The parameter keys in definition (= suggestion) order."""
        return list(self.parameters)

    def sample_config(self, trial: BaseTrial) -> dict[str, Any]:
        """Suggest the active parameters on ``trial`` in order; return them as a flat dict.

        A parameter is active when each of its conditions names an active parameter whose
        sampled value satisfies it; inactive parameters are neither suggested (so Optuna
        never records them) nor returned, so the training config's defaults apply to them.
        Works with any Optuna trial: ``study.ask()``, the trial inside ``study.optimize``,
        Ray's recording wrapper, and ``optuna.trial.FixedTrial(params)`` to rebuild the
        config of a stored trial. On the same trial it returns the same values again.
        """
        values: dict[str, Any] = {}
        for key, spec in self.parameters.items():
            if all(ref in values and cond.holds(values[ref]) for ref, cond in spec.when.items()):
                values[key] = spec.suggest(trial, key)
        return values

    def define_by_run(self, fixed: Mapping[str, Any] | None = None) -> DefineByRun:
        """The function for ``OptunaSearch(space=...)``; ``fixed`` constants join every config.

        Fixed keys may not also be searched: Ray would let the constant overwrite the
        suggested value while Optuna keeps learning from the suggestion.
        """
        constants = dict(fixed or {})
        clash = sorted(set(constants).intersection(self.parameters))
        if clash:
            raise SearchSpaceError(f"{self.name}: fixed keys are also searched: {clash}")
        bad = sorted(key for key in constants if not _KEY.fullmatch(str(key)))
        if bad:
            raise SearchSpaceError(
                f"{self.name}: fixed keys must be dotted config keys (Ray turns '/' into "
                f"nesting): {bad}"
            )
        return DefineByRun(self, constants)

    def validate_against(self, config_keys: Iterable[str], extra_keys: Iterable[str] = ()) -> None:
        """Check that every parameter is a training-config key, before any trial runs.

        ``config_keys`` are the flat keys of the training config (``TrainConfig().flat()``);
        ``extra_keys`` allows more, where an entry ``group.*`` allows every key under
        ``group`` (free-form mappings such as ``model.options``, or groups not built yet).
        """
        extra = list(extra_keys)
        allowed = {*config_keys, *(key for key in extra if not key.endswith(".*"))}
        groups = [key[:-1] for key in extra if key.endswith(".*")]
        lines = []
        for key in self.parameters:
            if key in allowed or any(key.startswith(group) for group in groups):
                continue
            hint = did_you_mean(key, sorted(allowed))
            lines.append(f"  {key}: not a training-config key{hint}")
        if lines:
            raise SearchSpaceError("\n".join([f"invalid search space {self.name}:", *lines]))


@dataclass(frozen=True)
class DefineByRun:
    """A picklable define-by-run function (Ray checkpoints it with plain ``pickle``).

    Calling it suggests the space's active parameters on the trial and returns the fixed
    constants, which Ray merges over the suggested values into the trial config.
    """

    space: SearchSpace
    constants: dict[str, Any] = field(default_factory=dict)

    def __call__(self, trial: BaseTrial) -> dict[str, Any]:
        self.space.sample_config(trial)
        return dict(self.constants)


def _structure_problems(parameters: Mapping[str, AnyParam]) -> list[tuple[str, str]]:
    """What makes an ordered space unusable for define-by-run, as ``(key, problem)`` pairs."""
    order = {key: i for i, key in enumerate(parameters)}
    problems = []
    for key, spec in parameters.items():
        if not _KEY.fullmatch(key):
            problems.append((key, "not a dotted config key (names of letters, digits and _)"))
        for ref in spec.when:
            if ref not in order:
                problems.append((key, f"condition on unknown parameter {ref!r}"))
            elif order[ref] >= order[key]:
                problems.append(
                    (
                        key,
                        f"condition on {ref!r}, which is not defined before it (conditions "
                        "may only refer to earlier parameters)",
                    )
                )
            elif not isinstance(parameters[ref], CategoricalParam):
                problems.append(
                    (
                        key,
                        f"condition on {ref!r}, which is not categorical (conditions compare "
                        "exact values)",
                    )
                )
    return problems


def _never_active(parameters: Mapping[str, AnyParam]) -> list[str]:
    """Parameters one of whose conditions no choice of the referenced parameter satisfies."""
    found = []
    for key, spec in parameters.items():
        for ref, cond in spec.when.items():
            other = parameters[ref]
            if isinstance(other, CategoricalParam) and not _satisfiable(cond, other.choices):
                found.append(
                    f"{key} (its condition on {ref} fails for every choice {list(other.choices)})"
                )
    return found


def _satisfiable(cond: Condition, choices: tuple[Any, ...]) -> bool:
    """Whether some choice satisfies ``cond`` (linear in the choices and values)."""
    values = {_identity(value) for value in cond.values}
    if cond.negate:
        return any(_identity(choice) not in values for choice in choices)
    return any(_identity(choice) in values for choice in choices)


class _SpaceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include: list[str] = Field(default_factory=list, description="presets or files, in order")
    parameters: dict[str, Any] = Field(default_factory=dict)


def list_presets() -> list[str]:
    """Names accepted by ``load_space`` (the YAML files in ``presets/``)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def load_space(
    name_or_path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    overrides_source: str = "overrides",
) -> SearchSpace:
    """Load a preset (by name) or a YAML file, then apply ``overrides`` as a sweep config would.

    ``overrides`` maps a key to a full spec (replaces the parameter in place, or appends a
    new one) or to ``None`` (removes it); ``overrides_source`` names them in errors, e.g.
    ``"sweeps/configs/x.yaml: search_space.overrides"``. Raises ``SearchSpaceError``.
    """
    path = _resolve(name_or_path, Path.cwd())
    params = _read_space(path, ())
    for key, raw in (overrides or {}).items():
        if raw is None:
            if key not in params:
                raise SearchSpaceError(
                    f"{overrides_source}: cannot remove {key!r}: not in the space "
                    f"(parameters: {list(params)})"
                )
            del params[key]
        else:
            params[key] = (_parse_param(raw, overrides_source, key), overrides_source)
    name = str(name_or_path)
    problems = _structure_problems({key: spec for key, (spec, _) in params.items()})
    if problems:
        lines = [f"  {key} (from {params[key][1]}): {problem}" for key, problem in problems]
        raise SearchSpaceError("\n".join([f"invalid search space {name}:", *lines]))
    space = SearchSpace(name=name, parameters={key: spec for key, (spec, _) in params.items()})
    never = _never_active(space.parameters)
    if never:
        warnings.warn(
            f"search space {name}: never suggested: {'; '.join(never)}", UserWarning, stacklevel=2
        )
    return space


def _resolve(ref: str | Path, base: Path) -> Path:
    """A bare name is a preset; anything with a YAML suffix or a directory part is a file."""
    path = Path(ref)
    if path.suffix in {".yaml", ".yml"} or len(path.parts) > 1:
        return path if path.is_absolute() else base / path
    preset = PRESETS_DIR / f"{ref}.yaml"
    if not preset.is_file():
        raise SearchSpaceError(f"unknown search-space preset {ref!r} (presets: {list_presets()})")
    return preset


def _read_space(path: Path, stack: tuple[Path, ...]) -> dict[str, tuple[AnyParam, str]]:
    """Parameters of one file with includes expanded: ``{key: (spec, file it came from)}``.

    Included files contribute in order (a key in two of them is an error); the file's own
    ``parameters`` then replace included ones in place or append new ones.
    """
    where = str(path)
    if path.resolve() in stack:
        chain = " -> ".join(str(p) for p in (*stack, path.resolve()))
        raise SearchSpaceError(f"search-space include cycle: {chain}")
    raw = read_yaml_mapping(path, "search-space file", SearchSpaceError)
    try:
        content = _SpaceFile.model_validate(raw)
    except ValidationError as err:
        raise SearchSpaceError(_describe(err, where, _SpaceFile)) from None
    params: dict[str, tuple[AnyParam, str]] = {}
    for ref in content.include:
        for key, (spec, origin) in _read_space(
            _resolve(ref, path.parent), (*stack, path.resolve())
        ).items():
            if key in params:
                raise SearchSpaceError(
                    f"{where}: include: parameter {key!r} is defined in both "
                    f"{params[key][1]} and {origin}"
                )
            params[key] = (spec, origin)
    for key, raw_spec in content.parameters.items():
        params[key] = (_parse_param(raw_spec, where, f"parameters.{key}"), where)
    return params


def _parse_param(raw: Any, where: str, path: str) -> AnyParam:
    """Validate one spec, dispatching on ``type`` by hand so errors read ``<path>.<field>``."""
    if not isinstance(raw, Mapping):
        raise SearchSpaceError(
            f"invalid search space in {where}:\n  {path}: expected a mapping with a type, "
            f"got {raw!r}"
        )
    kind = raw.get("type")
    model = _PARAM_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        problem = "missing" if kind is None else f"unknown type {kind!r}"
        raise SearchSpaceError(
            f"invalid search space in {where}:\n  {path}.type: {problem} (expected one of "
            f"{', '.join(_PARAM_TYPES)})"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise SearchSpaceError(_describe(err, where, model, path)) from None


def _describe(err: ValidationError, where: str, model: type[BaseModel], prefix: str = "") -> str:
    return "\n".join([f"invalid search space in {where}:", *describe_errors(err, model, prefix)])
