"""The training config: defaults, YAML and flat-dict loading, and errors that name the key."""

from __future__ import annotations

import pytest

from trainables.config import ConfigError, TrainConfig, flatten, load_config, unflatten
from trainables.train import parse_overrides


def test_defaults_are_valid_and_round_trip_through_the_flat_form() -> None:
    config = load_config()
    assert config == TrainConfig()
    assert load_config(config.flat()) == config
    assert config.eval_eps == config.eps


def test_yaml_nested_and_dotted_keys_and_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "eps: 0.2\nmethod:\n  name: mtl-ibp\n  alpha: 0.3\noptim.lr: 0.01\n"
        "model:\n  name: cnn7\n  options: {width: 8}\n"
    )
    config = load_config(path, {"method.alpha": 0.7, "model.options.linear_size": 32})
    assert config.eps == 0.2
    assert config.method.name == "mtl-ibp"
    assert config.method.alpha == 0.7  # the override wins
    assert config.optim.lr == 0.01
    assert config.model.options == {"width": 8, "linear_size": 32}


def test_flat_dict_from_a_search_space() -> None:
    config = load_config(
        {"method.name": "sabr", "method.sabr_lambda": 0.2, "epochs": 3, "eps_schedule.length": 2}
    )
    assert (config.method.name, config.method.sabr_lambda, config.epochs) == ("sabr", 0.2, 3)


@pytest.mark.parametrize(
    ("flat", "named"),
    [
        ({"optim.lr": -1.0}, "optim.lr"),
        ({"optim.lrr": 0.1}, "optim.lrr: unknown key"),
        ({"method.name": "crown-ibp-x"}, "method.name"),
        ({"method.alpha": 1.5}, "method.alpha"),
        ({"eps": 2.0}, "eps"),
        ({"device": "gpu"}, "device"),
        ({"optim.milestones": [0.9, 0.5]}, "optim.milestones"),
        ({"epochs": 0}, "epochs"),
        ({"eval.verifier": "milp"}, "eval.verifier"),
        ({"bogus": 1}, "bogus: unknown key"),
    ],
)
def test_bad_key_or_value_is_one_error_naming_it(flat, named) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(flat)
    assert named in str(info.value)


def test_errors_name_the_file_and_every_bad_key(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim: {lr: 0}\nbatch_size: -3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "optim.lr" in message and "batch_size" in message


def test_ramp_must_start_within_the_run() -> None:
    with pytest.raises(ConfigError, match=r"eps_schedule\.start=5"):
        load_config({"epochs": 3, "eps_schedule.start": 5})


def test_missing_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_a_value_cannot_also_be_a_group() -> None:
    with pytest.raises(ConfigError, match="'eps' is a value"):
        unflatten({"eps": 0.1, "eps.max": 0.2})


def test_flatten_unflatten_inverse() -> None:
    nested = {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}
    assert flatten(nested) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
    assert unflatten(flatten(nested)) == nested


def test_cli_overrides_are_parsed_as_yaml() -> None:
    assert parse_overrides(["optim.lr=1e-3", "eval.subset=null", "optim.milestones=[5, 8]"]) == {
        "optim.lr": 1e-3,
        "eval.subset": None,
        "optim.milestones": [5, 8],
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])


def test_unknown_names_and_options_are_all_reported_with_hints() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"model.name": "cnn_smal", "dataset.name": "cifar", "optim.lr": -1.0})
    message = str(info.value)
    assert "model.name: unknown model 'cnn_smal' (did you mean cnn_small?)" in message
    assert "dataset.name: unknown dataset 'cifar' (did you mean cifar10?)" in message
    assert "optim.lr" in message  # every bad key at once
    with pytest.raises(ConfigError, match=r"model\.options: model 'cnn7' has no option 'widht'"):
        load_config({"model.name": "cnn7", "model.options": {"widht": 8}})
    with pytest.raises(ConfigError, match=r"model\.options: .*'width' must be an int >= 1, got 0"):
        load_config({"model.name": "cnn7", "model.options.width": 0})
    with pytest.raises(ConfigError, match=r"dataset 'digits' has no option 'size'"):
        load_config({"dataset.options.size": 10})
    with pytest.raises(ConfigError, match=r"dataset\.options: synthetic: size must be >= 3"):
        load_config({"dataset.name": "synthetic", "dataset.options.size": 1})
    # too small an input for the strides: caught by building the model on the meta device
    with pytest.raises(ConfigError, match=r"model\.options: .*too small.*1x1x1 input of synthetic"):
        load_config({"dataset.name": "synthetic", "dataset.options.input_shape": [1, 1, 1]})


@pytest.mark.parametrize(
    ("keys", "ok"),
    [
        ({"epochs": 6, "eps_schedule.start": 2, "eps_schedule.length": 5}, True),  # ends at 6
        ({"epochs": 6, "eps_schedule.start": 2, "eps_schedule.length": 6}, False),
        ({"epochs": 2}, False),  # the default 5-epoch ramp: issue "epochs: 2 ends at eps 0.0004"
        ({"epochs": 2, "eps_schedule.kind": "constant"}, True),
        ({"epochs": 2, "method.name": "standard"}, True),  # trains at no eps
        ({"epochs": 2, "eps": 0.0}, True),
        ({"epochs": 2, "method.name": "pgd-at"}, False),
    ],
)
def test_the_eps_ramp_must_end_within_the_run(keys, ok) -> None:
    if ok:
        load_config(keys)
        return
    with pytest.raises(ConfigError) as info:
        load_config(keys)
    message = str(info.value)
    assert "eps_schedule.start=" in message and "eps_schedule.length=" in message
    assert f"epochs={keys['epochs']}" in message
