"""Dotted config keys (``method.alpha``) mapped onto the fields of nested pydantic models.

Written generically over ``model_fields`` so that it follows the config's structure as it
changes: a group may be one model or a union of models (a discriminated union on a field
such as ``method.name``, each member with its own settings). Two uses:

* ``walk_loc`` turns a pydantic error location into the dotted key a user wrote (dropping
  union tags) plus the model that holds it, for "did you mean" hints;
* ``lookup_field`` finds the field(s) a search-space key sets; for a union it looks in
  every member that has the key, restricted to the members the parameter's ``when``
  conditions select on the discriminator (``when: {method.name: [cc-ibp, sabr]}``), and
  ``check_value`` validates a value against a field's limits (constraints and validators
  of the field, run by pydantic as an assignment, so the message names the limit).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

_UNION_TYPES = (Union, types.UnionType)


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, meta...]`` -> ``(X, [meta...])``."""
    metadata: list[Any] = []
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata.extend(extra)
    return annotation, metadata


def model_members(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes an annotation can hold (through unions and ``Annotated``)."""
    annotation, _ = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in _UNION_TYPES:
        return [member for arg in get_args(annotation) for member in model_members(arg)]
    return []


def _discriminator(info: FieldInfo | None, annotation: Any) -> str | None:
    candidates = [info] if info is not None else []
    candidates += [meta for meta in _strip(annotation)[1] if isinstance(meta, FieldInfo)]
    for candidate in candidates:
        if isinstance(candidate.discriminator, str):
            return candidate.discriminator
    return None


def tag_values(member: type[BaseModel], discriminator: str) -> tuple[Any, ...]:
    """The discriminator values selecting ``member`` (its ``Literal`` annotation)."""
    info = member.model_fields.get(discriminator)
    if info is None:
        return ()
    annotation, _ = _strip(info.annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _is_mapping(annotation: Any) -> bool:
    annotation, _ = _strip(annotation)
    origin = get_origin(annotation) or annotation
    return origin in (dict, typing.Mapping, Mapping)


def did_you_mean(word: object, options: Iterable[object], prefix: str = "") -> str:
    """`` (did you mean <prefix>X?)`` for the closest of ``options`` (difflib), or ``""``."""
    names = [str(option) for option in options]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def walk_loc(
    model: type[BaseModel], loc: tuple[Any, ...]
) -> tuple[list[str], type[BaseModel] | None, Any]:
    """A pydantic error ``loc`` as (dotted key parts, the model holding the last key, the
    last field's annotation). Union tags (discriminator values, member class names, scalar
    member tags such as ``bool``) are dropped from the parts."""
    parts: list[str] = []
    current: type[BaseModel] | None = model
    parent: type[BaseModel] | None = None
    annotation: Any = None
    info: FieldInfo | None = None
    for part in loc:
        if current is not None:
            parts.append(str(part))
            parent = current
            info = current.model_fields.get(str(part))
            annotation = None if info is None else info.annotation
            current = None
            if info is None:
                continue
            members = model_members(annotation)
            if len(members) == 1:
                current = members[0]
            continue
        if annotation is None:
            parts.append(str(part))
            continue
        members = model_members(annotation)
        chosen = _member_for_tag(members, _discriminator(info, annotation), part)
        if chosen is not None:
            current, info = chosen, None
            continue
        inner, _ = _strip(annotation)
        if get_origin(inner) in _UNION_TYPES:
            continue  # a scalar union member's tag, e.g. "bool" or "literal['auto']"
        parts.append(str(part))
        args = get_args(inner)
        annotation = args[-1] if args else None  # dict values, list items
        members = model_members(annotation)
        current = members[0] if len(members) == 1 else None
    return parts, parent, annotation


def _member_for_tag(
    members: list[type[BaseModel]], discriminator: str | None, tag: Any
) -> type[BaseModel] | None:
    for member in members:
        if member.__name__ == tag or (discriminator and tag in tag_values(member, discriminator)):
            return member
    return None


@dataclass(frozen=True)
class FieldRef:
    """One field a dotted key sets: ``owner.model_fields[name]``, reached along ``path``.

    ``selection`` holds the union choices made on the way, as (discriminator key, tags),
    e.g. ``(("method.name", ("cc-ibp",)),)``.
    """

    path: tuple[str, ...]
    owner: type[BaseModel]
    name: str
    selection: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    #: The field is the discriminator of the union ``owner`` belongs to (``method.name``):
    #: a value is acceptable when one member's field accepts it.
    is_tag: bool = False

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def where(self) -> str:
        """`` (method.name=cc-ibp)`` for a field of a union member, else ``""``."""
        shown = [f"{key}={'/'.join(map(str, tags))}" for key, tags in self.selection]
        return f" ({', '.join(shown)})" if shown else ""


@dataclass
class Lookup:
    """What ``lookup_field`` found for a key."""

    refs: list[FieldRef] = field(default_factory=list)
    #: The key lies inside a free-form mapping (``model.options.width``): no field limits.
    free_form: bool = False
    #: Union members the conditions select that do not have the key, as ``key=tag`` texts.
    missing_in: list[str] = field(default_factory=list)
    #: Why the key is not a config key at all (with a "did you mean"), else None.
    unknown: str | None = None


def lookup_field(
    root: type[BaseModel],
    key: str,
    conditions: Mapping[str, Callable[[Any], bool]] | None = None,
) -> Lookup:
    """The field(s) dotted ``key`` sets in ``root``; ``conditions`` maps a dotted key to a
    predicate its value must satisfy (a search parameter's ``when``), used to select union
    members by their discriminator value."""
    conditions = conditions or {}
    parts = key.split(".")
    # (model, its path, union selections so far, the discriminator it was selected by)
    frontier: list[tuple[type[BaseModel], tuple[str, ...], tuple, str | None]] = [
        (root, (), (), None)
    ]
    result = Lookup()
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        next_frontier = []
        for model, path, selection, tag_field in frontier:
            info = model.model_fields.get(part)
            if info is None:
                continue
            here = (*path, part)
            if last:
                result.refs.append(FieldRef(here, model, part, selection, part == tag_field))
                continue
            if _is_mapping(info.annotation) and not model_members(info.annotation):
                result.free_form = True
                continue
            members = model_members(info.annotation)
            discriminator = _discriminator(info, info.annotation)
            if len(members) > 1 and discriminator:
                tag_key = ".".join((*here, discriminator))
                holds = conditions.get(tag_key)
                for member in members:
                    tags = tag_values(member, discriminator)
                    if holds is not None and not any(holds(tag) for tag in tags):
                        continue
                    if parts[depth + 1] not in member.model_fields and depth + 1 == len(parts) - 1:
                        if holds is not None:
                            result.missing_in.append(f"{tag_key}={'/'.join(map(str, tags))}")
                        continue
                    next_frontier.append(
                        (member, here, (*selection, (tag_key, tags)), discriminator)
                    )
            else:
                next_frontier.extend((member, here, selection, None) for member in members)
        if result.free_form:
            return result
        if not next_frontier and not result.refs and not result.missing_in:
            result.unknown = f"not a config key{did_you_mean(key, _all_keys(root))}"
            return result
        frontier = next_frontier
    return result


def _all_keys(root: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in root.model_fields.items():
        members = model_members(info.annotation)
        keys.append(f"{prefix}{name}")
        for member in members:
            keys.extend(_all_keys(member, f"{prefix}{name}."))
    return sorted(set(keys))


def check_value(
    ref: FieldRef, value: Any, reference: BaseModel | None = None
) -> ValidationError | None:
    """The error of setting ``ref``'s field to ``value``, or None when it is acceptable.

    The field is validated as an assignment to an instance of its owner: ``reference``'s
    group at ``ref.path`` when it is of the owner's class (so rules across the group's keys
    see the real settings), else the owner's defaults. Constraints, field validators and the
    owner's model validators all run, so the error names the limit that is broken.
    """
    instance = _owner_instance(ref, reference)
    try:
        ref.owner.__pydantic_validator__.validate_assignment(instance, ref.name, value)
    except ValidationError as err:
        return err
    return None


def _owner_instance(ref: FieldRef, reference: BaseModel | None) -> BaseModel:
    node: Any = reference
    for name in ref.path[:-1]:
        node = getattr(node, name, None)
    if isinstance(node, ref.owner):
        return node.model_copy()
    tags = {key.rsplit(".", 1)[-1]: values[0] for key, values in ref.selection if values}
    return ref.owner.model_construct(
        **{k: v for k, v in tags.items() if k in ref.owner.model_fields}
    )
