"""Config files are read one way everywhere: size, duplicate keys, tags, aliases; errors name
the key with a "did you mean"; dotted keys are looked up in (union) models generically."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from search_spaces import SearchSpaceError, load_space
from sweeps.checks import refusals
from sweeps.config import SweepConfigError, load_sweep
from trainables.config import ConfigError, TrainConfig, load_config
from trainables.config_fields import check_value, lookup_field, walk_loc
from trainables.config_io import (
    MAX_CONFIG_BYTES,
    describe_errors,
    parse_yaml_value,
    read_yaml_mapping,
)
from trainables.teachers import TeacherError
from trainables.teachers.registry import read_registry


def _sweep(path: Path) -> Any:
    return load_sweep(path)


#: (reader, the error it raises, a valid body to which a problem is appended)
READERS = [
    (load_config, ConfigError, "epochs: 5\n"),
    (_sweep, SweepConfigError, "name: s\n"),
    (load_space, SearchSpaceError, "parameters: {}\n"),
    (read_registry, TeacherError, "teachers: {}\n"),
]


@pytest.mark.parametrize(
    ("read", "error", "body"), READERS, ids=lambda r: getattr(r, "__name__", "")
)
def test_every_reader_refuses_duplicate_keys_tags_and_oversized_files(
    tmp_path, read, error, body
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(body + body)
    with pytest.raises(error, match=r"duplicate key") as info:
        read(path)
    assert str(path) in str(info.value)

    marker = tmp_path / "marker"
    path.write_text(f"{body}x: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(error, match=r"tag .*python/object/apply:os\.system.* not allowed"):
        read(path)
    assert not marker.exists()

    path.write_text(body + "# " + "x" * MAX_CONFIG_BYTES + "\n: [")  # invalid YAML, too
    with pytest.raises(error, match=r"bytes; config files are limited to 1,000,000 bytes"):
        read(path)


def test_alias_bombs_deep_nesting_and_non_mappings_are_refused(tmp_path) -> None:
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
        for p, n in zip("abcdef", "bcdefg", strict=True)
    ]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(bomb) + "\n")
    with pytest.raises(ConfigError, match=r"more than 100,000 values once its aliases"):
        read_yaml_mapping(path, "config file", ConfigError)
    path.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml_mapping(path, "config file", ConfigError)
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping .*got a list"):
        read_yaml_mapping(path, "config file", ConfigError)
    with pytest.raises(ConfigError, match="is a directory"):
        read_yaml_mapping(tmp_path, "config file", ConfigError)


def test_a_set_value_is_plain_yaml_only() -> None:
    assert parse_yaml_value("[1, 2]", "--set a", ConfigError) == [1, 2]
    with pytest.raises(ConfigError, match=r"--set a: .*tag .*python/name:os\.system"):
        parse_yaml_value("!!python/name:os.system", "--set a", ConfigError)
    with pytest.raises(ConfigError, match=r"--set a: .*duplicate key 'x'"):
        parse_yaml_value("{x: 1, x: 2}", "--set a", ConfigError)


def test_errors_say_did_you_mean_for_keys_and_choices() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"optim.lrr": 0.1, "optim.name": "adamm", "eps": 2.0})
    message = str(info.value)
    assert "optim.lrr: unknown key (did you mean optim.lr?)" in message
    assert "optim.name: Input should be 'adam', 'adamw' or 'sgd' (did you mean adam?)" in message
    assert "eps: Input should be less than or equal to 1 (got 2.0)" in message


# -- a discriminated union, as the methods' settings become ------------------------------------


class _Ibp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["ibp"] = "ibp"
    l1: float = Field(0.0, ge=0, le=1)


class _CcIbp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["cc-ibp"] = "cc-ibp"
    l1: float = Field(0.0, ge=0, le=0.5)
    alpha: float = Field(0.5, ge=0, le=1)


class _Run(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Annotated[_Ibp | _CcIbp, Field(discriminator="name")] = Field(default_factory=_CcIbp)
    options: dict[str, Any] = Field(default_factory=dict)


def test_union_tags_are_dropped_from_error_paths_and_unknown_keys_get_hints() -> None:
    with pytest.raises(ValidationError) as info:
        _Run.model_validate({"method": {"name": "cc-ibp", "alpha": 3, "alpah": 1}})
    lines = describe_errors(info.value, _Run)
    assert "  method.alpha: Input should be less than or equal to 1 (got 3)" in lines
    assert "  method.alpah: unknown key (did you mean method.alpha?)" in lines
    assert walk_loc(_Run, ("method", "cc-ibp", "alpha"))[0] == ["method", "alpha"]
    with pytest.raises(ValidationError) as info:
        _Run.model_validate({"method": {"name": "cc-ibpp"}})
    assert describe_errors(info.value, _Run) == [
        "  method.name: unknown 'cc-ibpp' (did you mean cc-ibp?); expected one of: ibp, cc-ibp"
    ]


def test_lookup_follows_the_when_condition_into_union_members() -> None:
    only_cc = lookup_field(_Run, "method.alpha", {"method.name": lambda v: v == "cc-ibp"})
    assert [(ref.owner, ref.where) for ref in only_cc.refs] == [(_CcIbp, " (method.name=cc-ibp)")]
    everywhere = lookup_field(_Run, "method.l1")  # no condition: every member with the key
    assert [ref.owner for ref in everywhere.refs] == [_Ibp, _CcIbp]
    assert check_value(everywhere.refs[0], 0.8) is None
    assert "less than or equal to 0.5" in str(check_value(everywhere.refs[1], 0.8))
    wrong = lookup_field(_Run, "method.alpha", {"method.name": lambda v: v in ("ibp", "cc-ibp")})
    assert wrong.missing_in == ["method.name=ibp"] and len(wrong.refs) == 1
    tags = lookup_field(_Run, "method.name").refs
    assert [ref.is_tag for ref in tags] == [True, True]
    assert refusals(tags, "cc-ibp", None) == []  # one member takes it: enough for a tag
    assert refusals(tags, "cc-ibpp", None) == [
        ": unknown 'cc-ibpp' (did you mean cc-ibp?); expected one of: ibp, cc-ibp"
    ]
    assert refusals(everywhere.refs, 0.8, None)[0].startswith(" (method.name=cc-ibp): Input")
    assert lookup_field(_Run, "options.width").free_form
    assert "did you mean method.alpha" in str(lookup_field(_Run, "method.alpa").unknown)


def test_lookup_on_the_training_config_names_the_limit() -> None:
    found = lookup_field(TrainConfig, "method.alpha", {"method.name": lambda v: v == "cc-ibp"})
    (ref,) = found.refs
    assert ref.key == "method.alpha" and not found.missing_in
    assert "less than or equal to 1" in str(check_value(ref, 1.2))
    assert check_value(ref, 0.3) is None
    (epochs,) = lookup_field(TrainConfig, "epochs").refs
    reference = load_config({"eps_schedule.start": 2, "eps_schedule.length": 4})
    assert "after the last epoch" in str(check_value(epochs, 3, reference))  # uses the settings
    assert check_value(epochs, 5, reference) is None
    assert lookup_field(TrainConfig, "model.options.width").free_form
    assert "did you mean optim.lr" in str(lookup_field(TrainConfig, "optim.lrr").unknown)
