"""A sweep's bad input is stopped before Ray starts: every point of the space, every name,
the device and the data, with one message per problem naming the key and where it is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from search_spaces import load_space
from sweeps import CONFIGS_DIR
from sweeps.__main__ import main
from sweeps.checks import check_points, complete_point
from sweeps.config import SweepConfigError, check_sweep, load_sweep, on_cluster

DEMO = CONFIGS_DIR / "demo.yaml"


def write(tmp_path: Path, training: dict | None = None, overrides: dict | None = None, **top: Any):
    """The demo sweep with ``training`` keys and ``space.overrides`` changed (None removes)."""
    raw = yaml.safe_load(DEMO.read_text())
    raw["training"].update(training or {})
    raw["space"]["overrides"].update(overrides or {})
    raw.update(top)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def problems(path: Path, **kwargs: Any) -> str:
    with pytest.raises(SweepConfigError) as info:
        check_sweep(path, **kwargs)
    assert str(path) in str(info.value)
    return str(info.value)


def test_search_ranges_are_checked_against_the_fields_limits(tmp_path) -> None:
    alpha = {"type": "float", "low": 0.1, "high": 1.2, "when": {"method.name": "cc-ibp"}}
    lr = {"type": "float", "low": 0.0, "high": 0.1}
    restarts = {"type": "int", "low": 1, "high": 200, "step": 3}  # reaches 199 > 100
    message = problems(
        write(
            tmp_path, overrides={"method.alpha": alpha, "optim.lr": lr, "attack.restarts": restarts}
        )
    )
    assert (
        "space.overrides: method.alpha: high 1.2 (method.name=cc-ibp): Input should be less than"
        " or equal to 1" in message
    )
    assert "space.overrides: optim.lr: low 0.0: Input should be greater than 0" in message
    assert "space.overrides: attack.restarts: high 199: Input should be less than or equal to" in (
        message
    )


def test_a_bad_choice_in_the_overrides_is_reported_there_without_a_raw_warning(
    tmp_path, recwarn
) -> None:
    method = {"type": "categorical", "choices": ["ibp", "cc-ibpp", "sabr"]}
    message = problems(write(tmp_path, overrides={"method.name": method}))
    assert "space.overrides: method.name: choice 'cc-ibpp': " in message
    assert "(did you mean cc-ibp?)" in message and "training" not in message
    assert not recwarn.list  # no UserWarning quoting a source line
    restricted = {"type": "categorical", "choices": ["sabr"]}  # method.alpha: never suggested
    checked = check_sweep(write(tmp_path, overrides={"method.name": restricted}))
    assert any("never suggested: method.alpha" in w for w in checked.warnings)
    assert not recwarn.list


def test_unknown_names_are_reported_at_once_with_hints(tmp_path) -> None:
    teacher = {"type": "categorical", "choices": ["none", "pgd-at-digit"]}
    message = problems(
        write(
            tmp_path,
            training={"model.name": "cnn_smal", "dataset.name": "digit"},
            overrides={"teacher.name": teacher},
        )
    )
    assert "training: model.name: unknown model 'cnn_smal' (did you mean cnn_small?)" in message
    assert "training: dataset.name: unknown dataset 'digit' (did you mean digits?)" in message
    assert "space.overrides: teacher.name: unknown teacher 'pgd-at-digit' (did you mean" in message
    message = problems(write(tmp_path, training={"model.options.widht": 2}))
    assert "training: model.options: model 'cnn_small' has no option 'widht' (did you mean" in (
        message
    )
    width = {"type": "int", "low": 0, "high": 4}
    message = problems(write(tmp_path, overrides={"model.options.width": width}))
    assert "space.overrides: model.options.width: low 0: " in message
    assert "'width' must be an int >= 1, got 0" in message


def test_cross_key_rules_are_checked_at_every_combination_of_choices(tmp_path) -> None:
    """Distillation needs a certified method: broken only where trades meets a teacher."""
    method = {"type": "categorical", "choices": ["ibp", "cc-ibp", "mtl-ibp", "sabr", "trades"]}
    message = problems(write(tmp_path, overrides={"method.name": method}))
    assert "training with " in message and "method.name=trades" in message
    assert "teacher.name=pgd-at-digits-fast" in message
    assert "distillation needs a certified method" in message
    points, note = check_points(load_space("full"))
    assert not note and len(points) == 432  # 2 optimisers x 6 methods x 36 teacher branches
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)


def test_ramps_that_cannot_finish_are_errors_for_the_space_and_the_fixed_settings(
    tmp_path,
) -> None:
    length = {"type": "int", "low": 1, "high": 8}
    message = problems(write(tmp_path, overrides={"eps_schedule.length": length}))
    assert (
        "eps_schedule.start up to 2 (space.overrides) + eps_schedule.length up to 8"
        " (space.overrides) - 1 = epoch 9 > epochs = 6 (training)"
    ) in message
    fixed = {"eps_schedule.start": None, "eps_schedule.length": None}
    message = problems(write(tmp_path, {"eps_schedule.length": 7}, overrides=fixed))
    assert "training: eps_schedule.start=1 + eps_schedule.length=7 - 1 = epoch 7" in message


@pytest.mark.parametrize("name", [".", "..", "a/b", "../x", ".hidden", "x" * 101, ""])
def test_sweep_names_stay_inside_the_storage(tmp_path, name) -> None:
    assert "is not a sweep name" in problems(write(tmp_path, name=name))


def test_zero_trials_is_an_error_not_ignored(tmp_path, capsys) -> None:
    assert main(["validate", str(DEMO), "--num-trials", "0"]) == 2
    assert "num_trials: Input should be greater than or equal to 1 (got 0) (given on the" in (
        capsys.readouterr().err
    )


def test_a_cuda_device_must_be_one_a_trial_sees(tmp_path, monkeypatch) -> None:
    message = problems(write(tmp_path, {"device": "cuda:7"}))
    assert "device='cuda:7', but resources.gpus_per_worker is 0" in message
    gpu = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1}
    message = problems(write(tmp_path, {"device": "cuda:1"}, resources=gpu))
    assert "a trial sees only its own 1 GPU(s)" in message
    path = write(tmp_path, {"device": "cuda"}, resources=gpu)
    check_sweep(path)  # a cluster may have the GPU
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = problems(path, runs_here=True)
    assert "device='cuda': this machine has no CUDA device" in message


def test_missing_data_warns_at_validate_and_stops_a_local_run(tmp_path, capsys, monkeypatch):
    path = write(tmp_path, {"dataset.name": "mnist", "dataset.root": str(tmp_path)})
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: the data is not on this machine" in err and "dataset 'mnist'" in err
    assert "MNIST/raw/train-images-idx3-ubyte" in err
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not on_cluster()
    assert main(["run", str(path)]) == 2  # before Ray starts
    assert "training: dataset.name='mnist': dataset 'mnist' not found" in capsys.readouterr().err
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", "ray://cluster:10001")
    assert on_cluster()  # a submission: the nodes may have the data
    assert check_sweep(path, runs_here=not on_cluster()).warnings


def test_training_config_takes_representative_values_for_searched_keys() -> None:
    sweep = load_sweep(DEMO)
    config = sweep.training_config()
    assert (config.eps_schedule.start, config.eps_schedule.length) == (1, 1)  # low ends
    assert config.optim.decay == 0.2  # the default, inside [0.1, 0.9]
    assert config.teacher.name == "none" and config.method.name == "cc-ibp"  # the defaults
    space = sweep.search_space()
    point = complete_point(space, {"method.name": "cc-ibp"})
    assert point["method.alpha"] == 0.5 and "method.sabr_lambda" not in point


def test_large_categoricals_validate_fast_and_huge_ones_are_refused(tmp_path, capsys) -> None:
    """The limit, 10,000 choices, takes seconds to check in a sweep; 3 million are refused
    at once (the duplicate check was quadratic: 20,000 choices took 75 s)."""
    seeds = {"type": "categorical", "choices": list(range(10_000))}
    path = write(tmp_path, overrides={"seed": seeds})
    started = time.perf_counter()
    checked = check_sweep(path)
    loaded = time.perf_counter() - started
    assert len(checked.sweep.search_space().parameters["seed"].choices) == 10_000
    assert not checked.warnings  # too many combinations: the seeds are varied one at a time
    seeds["choices"][-1] = -1
    path = write(tmp_path, overrides={"seed": seeds})
    assert "space.overrides: seed: choice -1: Input should be greater than or equal to 0" in (
        problems(path)
    )
    started = time.perf_counter()
    with pytest.raises(Exception, match=r"3,000,000 choices: at most 10,000"):
        load_space("certified", {"seed": {"type": "categorical", "choices": [0] * 3_000_000}})
    refused = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n10,000 choices checked in {loaded:.2f} s; 3,000,000 refused in {refused:.2f} s")


def test_a_space_of_many_parameters_is_walked_without_recursion() -> None:
    many = {f"model.options.o{i}": {"type": "int", "low": 1, "high": 2} for i in range(3000)}
    points, note = check_points(load_space("certified", many))
    assert not note and len(points) == 12 and all(len(p) > 3000 for p in points)  # 2 x 6
