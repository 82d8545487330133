"""Everything checked about a sweep before Ray starts, every problem reported at once.

* The fixed training settings (``training``) and the search space (preset + overrides) load.
* Every search parameter is a training-config key not also fixed in ``training``, and its
  whole range fits its field: the low and the highest reachable end of a float or int range
  and every categorical choice are validated against the field's limits
  (``trainables.config_fields``); a parameter of one method's settings is looked up in the
  method(s) its ``when`` condition selects. Problems name the parameter, where it comes from
  (``space.overrides`` or the preset) and the limit.
* Rules across keys hold at every combination of categorical choices (numeric parameters at
  a representative value: the default when inside the range, else the low end). Above
  ``MAX_POINTS`` combinations, choices that no condition refers to are varied one at a time
  (up to ``MAX_SINGLES`` choices per parameter; longer lists are checked against their key's
  limits only).
  The eps ramp is checked from the ranges: the largest start plus the largest length must
  end by the smallest ``epochs``.
* Teachers (the fixed one or every searched choice) resolve in their registry, and a CUDA
  ``device`` is one a trial can see: Ray shows a trial only its own GPUs
  (``resources.gpus_per_worker``), numbered from ``cuda:0``.
* Machine-dependent (warnings unless the trials run here): the dataset's files, the device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from search_spaces import CategoricalParam, FloatParam, IntParam, SearchSpace, SearchSpaceError
from search_spaces.space import AnyParam
from trainables.config import (
    ConfigError,
    TrainConfig,
    flatten,
    load_config,
    ramp_applies,
    unflatten,
)
from trainables.config_fields import (
    FieldRef,
    check_value,
    did_you_mean,
    lookup_field,
    tag_values,
)
from trainables.config_io import describe_errors

#: Combinations of categorical choices validated in full; beyond, see the module docstring.
MAX_POINTS = 1000
#: Above this many choices, a categorical no condition refers to is checked against its
#: key's limits only, not in a full config (a list of seeds needs no cross-key check).
MAX_SINGLES = 100
#: Bad values listed per search parameter (the rest are counted).
MAX_LISTED = 5
#: Dotted config keys named in a message (``eps_schedule.start=2 + ...``).
_KEYS = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def representative(spec: AnyParam, default: Any) -> Any:
    """The value a point takes for ``spec`` when it is not varied: ``default`` when the
    parameter can take it, else the first choice or the low end."""
    if isinstance(spec, CategoricalParam):
        same = (c for c in spec.choices if c == default and type(c) is type(default))
        return next(same, spec.choices[0])
    number = isinstance(default, int | float) and not isinstance(default, bool)
    if not number or not spec.low <= default <= highest(spec):
        return spec.low
    if isinstance(spec, IntParam) and not isinstance(default, int):
        return spec.low
    if spec.step and not spec.log:
        steps = (default - spec.low) / spec.step
        return default if abs(steps - round(steps)) < 1e-9 else spec.low
    return default


def highest(spec: FloatParam | IntParam) -> float:
    """The largest value Optuna can suggest (the top of the step grid below ``high``)."""
    if spec.step and not spec.log:
        return spec.low + math.floor((spec.high - spec.low) / spec.step + 1e-9) * spec.step
    return spec.high


def _active(spec: AnyParam, values: dict[str, Any]) -> bool:
    return all(ref in values and cond.holds(values[ref]) for ref, cond in spec.when.items())


def complete_point(
    space: SearchSpace, params: dict[str, Any], fixed: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``params`` plus a representative value for every searched key it leaves out that is
    active given the values so far (a full trial's params come back unchanged). Keys in
    ``fixed`` (the sweep's fixed settings) keep their fixed value."""
    fixed = fixed or {}
    defaults = TrainConfig().flat()
    values: dict[str, Any] = {}
    added: dict[str, Any] = {}
    for key, spec in space.parameters.items():
        if key in params or key in fixed:
            values[key] = params.get(key, fixed.get(key))
        elif _active(spec, values):
            values[key] = added[key] = representative(spec, defaults.get(key))
    return {**params, **added}


def _points(space: SearchSpace, vary: set[str]) -> Iterator[dict[str, Any]]:
    """Every combination of the choices of the categorical parameters in ``vary`` (others at
    their representative value), following the ``when`` conditions in order."""
    defaults = TrainConfig().flat()
    items = list(space.parameters.items())
    stack: list[tuple[int, dict[str, Any]]] = [(0, {})]  # depth first, without recursion
    while stack:
        i, values = stack.pop()
        for j in range(i, len(items)):
            key, spec = items[j]
            if not _active(spec, values):
                continue
            if isinstance(spec, CategoricalParam) and key in vary:
                stack.extend((j + 1, {**values, key: c}) for c in reversed(spec.choices[1:]))
                values[key] = spec.choices[0]
            else:
                values[key] = representative(spec, defaults.get(key))
        yield values


def _first(points: Iterator[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool]:
    taken = []
    for point in points:
        if len(taken) == limit:
            return taken, True
        taken.append(point)
    return taken, False


def check_points(space: SearchSpace) -> tuple[list[dict[str, Any]], list[str]]:
    """The points to validate (see the module docstring) and a warning if they are cut."""
    categorical = {k for k, spec in space.parameters.items() if isinstance(spec, CategoricalParam)}
    points, cut = _first(_points(space, categorical), MAX_POINTS)
    if not cut:
        return points, []
    referenced = {ref for spec in space.parameters.values() for ref in spec.when}
    points, cut = _first(_points(space, categorical & referenced), MAX_POINTS)
    singles = []
    for key in sorted(categorical - referenced):
        base = next((p for p in points if key in p), None)
        choices = space.parameters[key].choices  # type: ignore[union-attr]
        if base is not None and len(choices) <= MAX_SINGLES:
            singles += [{**base, key: choice} for choice in choices]
    note = (
        []
        if not cut
        else [
            f"space: only the first {MAX_POINTS} combinations of categorical choices were checked"
            " against the training settings (each choice was checked against its key's limits)"
        ]
    )
    return points + singles, note


@dataclass
class SweepCheck:
    """The checks of one sweep: its fixed ``training`` settings and ``space``, whose
    ``overridden`` keys come from ``space.overrides`` and the rest from ``preset``;
    ``runs_here``: the trials run on this machine. ``run()`` -> (problems, warnings)."""

    training: dict[str, Any]
    space: SearchSpace
    overridden: set[str]
    preset: str
    gpus_per_worker: float
    runs_here: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.defaults = TrainConfig().flat()

    def origin(self, key: str) -> str:
        return "space.overrides" if key in self.overridden else f"space (preset {self.preset})"

    def run(self) -> tuple[list[str], list[str]]:
        try:
            self.fixed = flatten(unflatten(self.training))
        except ConfigError as err:
            self.problems.append(f"  training: {err}")
            return self.problems, self.warnings
        if self._keys():
            self._check()
        return self.problems, self.warnings

    def _check(self) -> None:
        self.points, note = check_points(self.space)
        self.warnings += note
        reference = self._validate_points()
        self._ranges(reference)
        self._ramp()
        self._teachers(reference or self._teacher_reference())
        self._device()
        self._data()

    def _keys(self) -> bool:
        try:
            keys = self.defaults.keys()
            self.space.validate_against(keys, extra_keys=["model.options.*", "dataset.options.*"])
        except SearchSpaceError as err:
            self.problems.append(_indent(f"space: {err}"))
        fixed = sorted(set(self.fixed) & set(self.space.keys()))
        if fixed:
            self.problems.append(f"  training fixes searched key(s) {fixed}: remove them there")
        return not self.problems

    def _validate_points(self) -> TrainConfig | None:
        """Validate the training settings at every check point; the first valid config."""
        reference, seen = None, set()
        self.point_lines: list[tuple[str, str]] = []  # (key, line) per distinct problem
        for point in self.points:
            try:
                config = load_config(self.training, point)
            except ConfigError as err:
                for line in str(err).splitlines()[1:]:
                    if line in seen:
                        continue
                    seen.add(line)
                    key = line.strip().split(": ", 1)[0]
                    self.point_lines.append((key, self._attribute(line, point)))
                continue
            reference = reference or config
        return reference

    def _attribute(self, line: str, point: dict[str, Any]) -> str:
        """A point's problem, with the point's categorical values when it names a searched
        key (a rule across keys), else as a problem of the fixed settings."""
        text, params = line.strip(), self.space.parameters
        named = _KEYS.findall(text.split(" (got ")[0])
        searched = [k for k in named if k in params or any(p.startswith(f"{k}.") for p in params)]
        if not searched:
            return f"  training: {text}"
        shown = ", ".join(
            f"{k}={v}" for k, v in point.items() if isinstance(params.get(k), CategoricalParam)
        )
        return f"  training with {shown}: {text}"

    def _ranges(self, reference: TrainConfig | None) -> None:
        """Every parameter's whole range against its field's limits (then the point lines
        whose key no range problem already names)."""
        named = set()
        for key, spec in self.space.parameters.items():
            lines = self._range_problems(key, spec, reference)
            if lines:
                named.add(key)
                self.problems += lines
        self.problems += [
            line
            for key, line in self.point_lines
            if not any(name == key or name.startswith(f"{key}.") for name in named)
        ]

    def _range_problems(self, key: str, spec: AnyParam, reference: TrainConfig | None) -> list[str]:
        found = lookup_field(TrainConfig, key, {r: c.holds for r, c in spec.when.items()})
        where = f"  {self.origin(key)}: {key}"
        if found.unknown:
            return []  # reported by validate_against
        lines = [
            f"{where}: not a setting of {tag} (its `when` condition selects it)"
            for tag in found.missing_in
        ]
        if isinstance(spec, CategoricalParam):
            values = [("choice", choice) for choice in spec.choices]
        else:
            values = [("low", spec.low), ("high", highest(spec))]
        bad = []
        for label, value in values:
            if found.free_form:
                message = self._free_form_problem(key, value)
                bad += [] if message is None else [f"{label} {value!r}: {message}"]
                continue
            bad += [f"{label} {value!r}{text}" for text in refusals(found.refs, value, reference)]
        lines += [f"{where}: {text}" for text in bad[:MAX_LISTED]]
        if len(bad) > MAX_LISTED:
            lines.append(f"{where}: ... and {len(bad) - MAX_LISTED} more bad values")
        return lines

    def _free_form_problem(self, key: str, value: Any) -> str | None:
        """A key inside a free-form mapping (``model.options.width``): validate a point."""
        base = next((p for p in self.points if key in p), {})
        try:
            load_config(self.training, {**base, key: value})
        except ConfigError as err:
            return "; ".join(line.strip() for line in str(err).splitlines()[1:])
        return None

    def _value_range(self, key: str) -> tuple[Any, Any, str]:
        """(smallest, largest) value ``key`` takes in the sweep, and where that comes from."""
        spec = self.space.parameters.get(key)
        if isinstance(spec, FloatParam | IntParam):
            return spec.low, highest(spec), self.origin(key)
        if isinstance(spec, CategoricalParam):
            numbers = [c for c in spec.choices if isinstance(c, int | float)]
            return min(numbers, default=None), max(numbers, default=None), self.origin(key)
        value = self.fixed.get(key, self.defaults.get(key))
        return value, value, "training" if key in self.fixed else "default"

    def _choices(self, key: str) -> list[Any]:
        spec = self.space.parameters.get(key)
        if isinstance(spec, CategoricalParam):
            return list(spec.choices)
        return [self.fixed.get(key, self.defaults.get(key))]

    def _ramp(self) -> None:
        searched = {"eps_schedule.start", "eps_schedule.length", "epochs"} & set(self.space.keys())
        if not searched:
            return  # the fixed settings alone: checked at every point
        _, start, start_from = self._value_range("eps_schedule.start")
        _, length, length_from = self._value_range("eps_schedule.length")
        epochs, _, epochs_from = self._value_range("epochs")
        _, eps, _ = self._value_range("eps")
        applies = any(
            ramp_applies(kind, method, eps or 0)
            for kind in self._choices("eps_schedule.kind")
            for method in self._choices("method.name")
        )
        if None in (start, length, epochs) or not applies or start + length - 1 <= epochs:
            return
        # The same rule broken at a check point says less: keep the range's message only.
        self.problems = [line for line in self.problems if "eps_schedule.start=" not in line]
        self.problems.append(
            f"  the eps ramp can end after the last epoch: eps_schedule.start up to {start}"
            f" ({start_from}) + eps_schedule.length up to {length} ({length_from}) - 1 ="
            f" epoch {start + length - 1} > epochs = {epochs} ({epochs_from}); lower the"
            " ranges' high ends or raise epochs"
        )

    def _teacher_reference(self) -> TrainConfig | None:
        """The defaults with the fixed teacher keys, when no check point is valid."""
        teacher = {k: v for k, v in self.fixed.items() if k.startswith("teacher.")}
        try:
            return load_config(teacher)
        except ConfigError:
            return None

    def _teachers(self, reference: TrainConfig | None) -> None:
        if reference is None:
            return
        from trainables.preflight import teacher_problem

        searched = "teacher.name" in self.space.parameters
        for name in self._choices("teacher.name"):
            if name == "none":
                continue
            config = reference.model_copy(
                update={"teacher": reference.teacher.model_copy(update={"name": name})}
            )
            problem = teacher_problem(config)
            if problem is not None:
                source = self.origin("teacher.name") if searched else "training"
                first, *rest = problem.splitlines()
                self.problems.append("\n".join([f"  {source}: {first}", *(f"  {r}" for r in rest)]))

    def _device(self) -> None:
        from trainables.preflight import device_problem

        visible = math.ceil(self.gpus_per_worker)
        for device in self._choices("device"):
            if not str(device).startswith("cuda"):
                continue
            index = int(str(device).partition(":")[2] or 0)
            if visible == 0:
                self.problems.append(
                    f"  training: device={device!r}, but resources.gpus_per_worker is 0: Ray"
                    " hides every GPU from a trial that asks for none (give each worker a GPU,"
                    " or use device: auto)"
                )
            elif index >= visible:
                self.problems.append(
                    f"  training: device={device!r}, but a trial sees only its own {visible}"
                    f" GPU(s) (resources.gpus_per_worker), numbered from cuda:0: use"
                    " device: cuda or auto"
                )
            elif self.runs_here and (problem := device_problem(str(device))):
                self.problems.append(f"  training: {problem} (trials run on this machine)")

    def _data(self) -> None:
        from trainables.data import find_missing

        root = self.fixed.get("dataset.root")
        download = bool(self.fixed.get("dataset.download", False))
        for name in self._choices("dataset.name"):
            missing = find_missing(str(name), root, download=download)
            if missing is None:
                continue
            if self.runs_here:
                self.problems.append(_indent(f"training: dataset.name={name!r}: {missing}"))
            else:
                self.warnings.append(
                    "the data is not on this machine (fine if the cluster's nodes have it):"
                    f" {missing}"
                )


def refusals(refs: list[FieldRef], value: Any, reference: TrainConfig | None) -> list[str]:
    """Why the fields ``refs`` refuse ``value``: every field must accept it, except that a
    union's discriminator (``method.name``) needs one member that does."""
    refusals = []
    for ref in refs:
        err = check_value(ref, value, reference)
        if err is not None:
            lines = describe_errors(err, ref.owner)
            refusals.append((ref, f"{ref.where}: {'; '.join(map(_without_key, lines))}"))
    tags = [ref for ref in refs if ref.is_tag]
    if tags and len([r for r, _ in refusals if r.is_tag]) < len(tags):
        refusals = [(ref, text) for ref, text in refusals if not ref.is_tag]
    elif tags:  # no member takes it: one message, not one per member
        names = [str(v) for ref in tags for v in tag_values(ref.owner, ref.name)]
        hint = did_you_mean(value, names)
        refusals = [(tags[0], f": unknown {value!r}{hint}; expected one of: {', '.join(names)}")]
    return [text for _, text in refusals]


def _without_key(line: str) -> str:
    """``"  alpha: Input should be ..."`` -> ``"Input should be ..."``, (the value is shown)."""
    text = line.strip()
    key, sep, message = text.partition(": ")
    message = message if sep and " " not in key else text
    return message.split(" (got ")[0]


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
