"""Reading config files and describing their errors: one wording for every kind of config.

Training configs, sweep configs, search spaces and teacher registries are YAML files read
at the edge, before anything runs. They all go through ``read_yaml_mapping`` (or
``parse_yaml_value`` for one ``--set`` value), which refuses, with one message naming the
file:

* files larger than ``MAX_CONFIG_BYTES`` (checked before reading a byte), and documents of
  more than ``MAX_YAML_NODES`` values once YAML aliases are expanded ("billion laughs");
* duplicate keys in one mapping (PyYAML keeps the last one silently);
* any tag that would build an object (``!!python/...``): the loader is PyYAML's safe loader,
  which never runs code, and the message says so instead of PyYAML's "could not determine a
  constructor";
* anything but a mapping at the top.

``describe_errors`` turns a pydantic ``ValidationError`` into one line per bad key
(``  optim.lr: Input should be greater than 0 (got -1.0)``), with "did you mean" for unknown
keys and choices. Each caller raises its own error class, so callers keep their exception
types (``ConfigError``, ``SweepConfigError``, ``SearchSpaceError``, ``TeacherError``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from trainables.config_fields import did_you_mean, walk_loc

#: Config files above this size are refused before they are read (a config holds settings,
#: not data: the largest ready config is a few kB; 1 MB leaves room for 10,000-choice lists).
MAX_CONFIG_BYTES = 1_000_000
#: Values in one YAML document after alias expansion (a few hundred in a real config).
MAX_YAML_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tag ever runs code) that refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_undefined(self, node: yaml.Node) -> Any:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"the tag {tag} is not allowed: config files hold plain values (YAML tags"
            " that build objects are refused, never executed)",
            node.start_mark,
        )


_StrictLoader.add_constructor(None, _StrictLoader.construct_undefined)


def _expanded_size(root: yaml.Node) -> int:
    """Number of nodes once aliases are expanded, counted without expanding them."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done or not children:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml_text(text: str, source: str = "<text>") -> Any:
    """Parse one YAML document with the checks above; raises ``ValueError`` saying why
    (``source`` names the text in PyYAML's line/column marks)."""
    loader = _StrictLoader(text)
    loader.name = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_NODES:
            raise ValueError(
                f"it holds more than {MAX_YAML_NODES:,} values once its aliases are expanded"
            )
        return loader.construct_document(node)
    except yaml.constructor.ConstructorError as err:  # a duplicate key or a refused tag
        raise ValueError(str(err).strip()) from None
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML: {err}") from None
    except RecursionError:
        raise ValueError("not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml_mapping(path: str | Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The mapping in YAML file ``path``; ``what`` names it in messages ("sweep config")."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise error(f"{what} {path} {problem}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise error(
            f"{what} {path} is {size:,} bytes; config files are limited to "
            f"{MAX_CONFIG_BYTES:,} bytes (trainables.config_io.MAX_CONFIG_BYTES)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text") from None
    except OSError as err:
        raise error(f"{what} {path} cannot be read: {err.strerror or err}") from None
    try:
        data = load_yaml_text(text, str(path))
    except ValueError as err:
        raise error(f"{what} {path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must hold a mapping (key: value lines), got a {_kind(data)}")
    return data


def parse_yaml_value(text: str, what: str, error: type[Exception]) -> Any:
    """One value written in YAML (a ``--set`` value); ``what`` names it in messages."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise error(f"{what}: the value is longer than {MAX_CONFIG_BYTES:,} bytes")
    try:
        return load_yaml_text(text, what)
    except ValueError as err:
        raise error(f"{what}: {err}") from None


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def describe_errors(
    err: ValidationError, model: type[BaseModel] | None = None, prefix: str = ""
) -> list[str]:
    """One ``"  key.path: message"`` line per problem of ``err``.

    ``model`` (the validated class) lets unknown keys and literal choices get a "did you
    mean" and drops pydantic's union tags (``method.cc-ibp.alpha`` reads ``method.alpha``);
    ``prefix`` is put before every key path (``parameters.optim.lr``).
    """
    lines = []
    for problem in err.errors():
        loc = tuple(problem["loc"])
        parts, parent, annotation = (
            walk_loc(model, loc) if model is not None else ([str(p) for p in loc], None, None)
        )
        if problem["type"] in ("union_tag_invalid", "union_tag_not_found"):
            parts = [*parts, str(problem["ctx"]["discriminator"]).strip("'\"")]
        full = [prefix, *parts] if prefix else parts
        message = _message(problem, parent, annotation, ".".join(full[:-1]))
        line = f"  {'.'.join(full)}: {message}" if full else f"  {message}"
        if line not in lines:  # a union reports one problem once per member
            lines.append(line)
    return lines


def _message(problem: Any, parent: type[BaseModel] | None, annotation: Any, group: str) -> str:
    if problem["type"] == "union_tag_invalid":  # a discriminated union's tag, e.g. method.name
        tags = [tag.strip().strip("'\"") for tag in str(problem["ctx"]["expected_tags"]).split(",")]
        tag = problem["ctx"]["tag"]
        return f"unknown {tag!r}{did_you_mean(tag, tags)}; expected one of: {', '.join(tags)}"
    if problem["type"] == "union_tag_not_found":
        return "missing (it selects which settings apply)"
    if problem["type"] == "extra_forbidden":
        known = list(parent.model_fields) if parent is not None else []
        hint = did_you_mean(problem["loc"][-1], known, f"{group}." if group else "")
        return f"unknown key{hint}"
    message = str(problem["msg"]).removeprefix("Value error, ")
    given = problem.get("input")
    if problem["type"] == "literal_error" and isinstance(given, str):
        message += did_you_mean(given, _literal_values(annotation))
    scalar = given is None or isinstance(given, str | int | float | bool)
    if problem["loc"] and scalar and problem["type"] != "missing":
        shown = _short(given)
        message += "" if shown in message else f" (got {shown})"
    return message


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _literal_values(annotation: Any) -> list[Any]:
    if annotation is None:
        return []
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [value for arg in get_args(annotation) for value in _literal_values(arg)]
