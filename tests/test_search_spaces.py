"""Search spaces: YAML presets, their errors, and the translation to Optuna and Ray Tune."""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from search_spaces import SearchSpace, SearchSpaceError, list_presets, load_space
from trainables.config import TrainConfig, load_config

BASE_CONFIG = Path(__file__).resolve().parents[1] / "trainables" / "configs" / "digits.yaml"
#: The distillation / SAAD keys being added to the training config (sweep issue); the presets
#: must use exactly these while the groups do not exist yet.
PLANNED_KEYS = {
    "teacher": ["teacher.name"],
    "distill": [
        "distill.objective",
        "distill.beta",
        "distill.layer",
        "distill.teacher_layer",
        "distill.distance",
        "distill.temperature",
        "distill.inputs",
    ],
    "saad": [
        "saad.enabled",
        "saad.weighting",
        "saad.gamma",
        "saad.scale",
        "saad.on_certified",
        "saad.clean_weight",
    ],
}
MISSING_GROUPS = [group for group in PLANNED_KEYS if group not in TrainConfig.model_fields]
CONVEX = {"cc-ibp", "mtl-ibp", "exp-ibp"}
ATTACKING = {*CONVEX, "sabr"}
CERTIFIED_ALWAYS = {
    "eps_schedule.start",
    "eps_schedule.length",
    "optim.lr",
    "optim.decay",
    "optim.name",
    "method.l1",
    "warmup.weight",
    "method.train_eps_factor",
    "method.name",
}


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def sample(space: SearchSpace, n: int, seed: int = 0) -> list[tuple[dict[str, Any], FrozenTrial]]:
    """``n`` (config, finished Optuna trial) pairs from a real study (ask / tell)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        config = space.sample_config(trial)
        out.append((config, study.tell(trial, 0.0)))
    return out


def expected_certified(config: dict[str, Any]) -> set[str]:
    method = config["method.name"]
    keys = set(CERTIFIED_ALWAYS)
    keys |= {"method.alpha"} if method in CONVEX else set()
    keys |= {"method.sabr_lambda"} if method == "sabr" else set()
    keys |= {"method.kappa_start", "method.kappa_end"} if method == "crown-ibp" else set()
    if method in ATTACKING:
        keys |= {"attack.steps", "attack.step_size", "method.attack_eps_factor"}
    return keys


def expected_full(config: dict[str, Any]) -> set[str]:
    keys = expected_certified(config) | {"teacher.name"}
    if config["teacher.name"] == "none":
        return keys
    keys |= {"distill.objective", "distill.beta", "saad.enabled"}
    if config["distill.objective"] == "feature":
        keys |= {"distill.layer", "distill.distance"}
    else:
        keys |= {"distill.temperature"}
    if config["saad.enabled"]:
        keys |= {"saad.weighting", "saad.scale", "saad.on_certified", "saad.clean_weight"}
        keys |= {"saad.gamma"} if config["saad.weighting"] == "entropy" else set()
    return keys


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- presets ---------------------------------------------------------------------------------


def test_presets_load_and_full_is_the_ordered_union() -> None:
    assert list_presets() == ["cc_dist", "certified", "full", "saad"]
    parts = [load_space(name).keys() for name in ("certified", "cc_dist", "saad")]
    full = load_space("full")
    assert full.keys() == parts[0] + parts[1] + parts[2]
    assert full.parameters["saad.enabled"].when["teacher.name"].holds("wrn") is True
    assert full.parameters["saad.enabled"].when["teacher.name"].holds("none") is False
    assert "teacher.name" not in load_space("saad").parameters["saad.enabled"].when


@pytest.mark.parametrize("name", ["certified", "cc_dist", "saad", "full"])
def test_presets_use_training_config_keys(name: str) -> None:
    planned = [key for group in MISSING_GROUPS for key in PLANNED_KEYS[group]]
    load_space(name).validate_against(TrainConfig().flat(), planned)


def test_validate_against_names_unknown_keys_and_accepts_group_wildcards(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        parameters:
          optim.lrr: {type: float, low: 0.001, high: 0.1}
          model.options.width: {type: int, low: 4, high: 16}
        """,
    )
    space = load_space(path)
    with pytest.raises(SearchSpaceError) as info:
        space.validate_against(TrainConfig().flat(), ["model.options.*"])
    message = str(info.value)
    assert "optim.lrr: not a training-config key (did you mean optim.lr?)" in message
    assert "model.options.width" not in message


@pytest.mark.parametrize("name", ["certified", "cc_dist", "saad", "full"])
def test_sampled_preset_configs_validate_with_the_training_config(name: str) -> None:
    space = load_space(name)
    missing = sorted({key.split(".")[0] for key in space.parameters}.intersection(MISSING_GROUPS))
    # Alone, the saad preset expects the sweep to fix a teacher (SAAD weights distillation).
    needs_teacher = "teacher.name" not in space.parameters and "teacher" not in MISSING_GROUPS
    # The presets' eps ramps are sized for CIFAR-10's 160 epochs (certified.yaml).
    fixed = {"epochs": 160, **({"teacher.name": "teacher"} if needs_teacher else {})}
    for config, _ in sample(space, 40):
        present = {k: v for k, v in config.items() if k.split(".")[0] not in missing}
        load_config(BASE_CONFIG, overrides={**fixed, **present})  # raises ConfigError if bad
    if missing:
        pytest.skip(
            f"validated the keys of existing groups only: trainables.config.TrainConfig has "
            f"no {missing} group(s) yet"
        )


# -- translation to Optuna -------------------------------------------------------------------


def test_types_log_scales_steps_and_bounds_over_many_samples(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        parameters:
          x.lin: {type: float, low: -1.0, high: 3.0}
          x.log: {type: float, low: 1.0e-4, high: 1.0, log: true}
          x.grid: {type: float, low: 0.0, high: 1.0, step: 0.25}
          n.lin: {type: int, low: -3, high: 7, step: 2}
          n.log: {type: int, low: 1, high: 1024, log: true}
          c.any: {type: categorical, choices: [true, 3, 0.5, text, null]}
        """,
    )
    results = sample(load_space(path), 400)
    configs = [config for config, _ in results]
    assert all(len(config) == 6 for config in configs)
    xs = {key: [config[key] for config in configs] for key in configs[0]}
    assert all(type(v) is float and -1.0 <= v <= 3.0 for v in xs["x.lin"])
    assert all(type(v) is float and 1e-4 <= v <= 1.0 for v in xs["x.log"])
    assert set(xs["x.grid"]) == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert set(xs["n.lin"]) == {-3, -1, 1, 3, 5, 7}
    assert all(type(v) is int and 1 <= v <= 1024 for v in xs["n.log"])
    assert {repr(v) for v in xs["c.any"]} == {"True", "3", "0.5", "'text'", "None"}
    # Log scale: half the mass below the geometric midpoint (uniform would put 1 % / 3 % there).
    assert 0.4 < sum(v < 1e-2 for v in xs["x.log"]) / 400 < 0.6
    assert 0.4 < sum(v <= 32 for v in xs["n.log"]) / 400 < 0.6
    assert sum(v < 1.0 for v in xs["x.lin"]) / 400 < 0.65  # linear: about a half below 1.0
    distributions = results[0][1].distributions
    assert distributions["x.log"] == FloatDistribution(1e-4, 1.0, log=True)
    assert distributions["x.grid"] == FloatDistribution(0.0, 1.0, step=0.25)
    assert distributions["n.lin"] == IntDistribution(-3, 7, step=2)
    assert distributions["n.log"] == IntDistribution(1, 1024, log=True)
    assert distributions["c.any"] == CategoricalDistribution([True, 3, 0.5, "text", None])


def test_method_conditionals_in_the_certified_preset() -> None:
    results = sample(load_space("certified"), 300)
    for config, trial in results:
        assert set(config) == expected_certified(config)
        assert trial.params == config  # Optuna recorded exactly the active parameters
        if "method.alpha" in config:
            assert 1e-3 <= config["method.alpha"] <= 0.5
    methods = {config["method.name"] for config, _ in results}
    assert methods == {"cc-ibp", "mtl-ibp", "exp-ibp", "sabr", "ibp", "crown-ibp"}


def test_nested_conditionals_in_the_full_preset() -> None:
    space = load_space("full")
    results = sample(space, 400, seed=1)
    for config, trial in results:
        assert set(config) == expected_full(config)
        assert trial.params == config
    seen = set().union(*(config for config, _ in results))
    assert seen == set(space.keys())  # every conditional parameter does get activated


def test_tpe_study_optimize_with_the_define_by_run_function() -> None:
    space = load_space("full")
    define = space.define_by_run()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        assert define(trial) == {}
        return trial.params.get("method.alpha", 0.0), trial.params["optim.lr"]

    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=20)
    assert len(study.trials) == 20
    for trial in study.trials:
        assert set(trial.params) == expected_full(trial.params)


def test_fixed_trial_rebuilds_a_stored_config_and_constants_are_returned() -> None:
    space = load_space("certified")
    (config, trial), *_ = sample(space, 1)
    assert space.sample_config(optuna.trial.FixedTrial(trial.params)) == config
    define = pickle.loads(pickle.dumps(space.define_by_run({"epochs": 3})))
    assert define(optuna.trial.FixedTrial(trial.params)) == {"epochs": 3}
    with pytest.raises(SearchSpaceError, match=r"fixed keys are also searched: \['optim.lr'\]"):
        space.define_by_run({"optim.lr": 0.1})
    with pytest.raises(SearchSpaceError, match="'/'"):
        space.define_by_run({"optim/lr_x": 0.1})


def test_round_trip_through_plain_data() -> None:
    space = load_space("full")
    dumped = space.model_dump(mode="json")
    assert dumped["parameters"]["distill.beta"]["when"] == {"teacher.name": {"not": ["none"]}}
    assert SearchSpace.model_validate(dumped) == space


# -- overrides -------------------------------------------------------------------------------


def test_overrides_replace_add_and_remove() -> None:
    space = load_space(
        "certified",
        {
            "optim.lr": {"type": "float", "low": 1e-3, "high": 2e-3, "log": True},
            "attack.restarts": {"type": "int", "low": 1, "high": 3},
            "method.l1": None,
        },
    )
    base = load_space("certified").keys()
    assert space.keys() == [key for key in base if key != "method.l1"] + ["attack.restarts"]
    for config, _ in sample(space, 100):
        assert 1e-3 <= config["optim.lr"] <= 2e-3
        assert config["attack.restarts"] in {1, 2, 3}
        assert "method.l1" not in config


def test_restricting_a_choice_warns_about_parameters_that_can_never_be_active() -> None:
    with pytest.warns(UserWarning, match=r"never suggested: method\.alpha .*method\.kappa_end"):
        space = load_space(
            "certified", {"method.name": {"type": "categorical", "choices": ["sabr"]}}
        )
    for config, _ in sample(space, 30):
        assert set(config) == expected_certified(config)
        assert "method.sabr_lambda" in config


def test_override_errors_name_their_source_and_key() -> None:
    source = "sweeps/configs/x.yaml: search_space.overrides"
    with pytest.raises(SearchSpaceError, match=r"x\.yaml: search_space.overrides: cannot remove"):
        load_space("certified", {"optim.momentum": None}, overrides_source=source)
    with pytest.raises(SearchSpaceError) as info:
        load_space(
            "certified",
            {"optim.lr": {"type": "float", "low": 1.0, "high": 0.1}},
            overrides_source=source,
        )
    assert source in str(info.value) and "optim.lr: low (1.0)" in str(info.value)
    with pytest.raises(SearchSpaceError) as info:
        load_space("certified", {"method.name": None})
    message = str(info.value)
    assert "method.alpha (from " in message and "certified.yaml" in message
    assert "condition on unknown parameter 'method.name'" in message


# -- errors in files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("optim.lr: {type: floaty, low: 0.1, high: 1.0}", "optim.lr.type: unknown type 'floaty'"),
        ("optim.lr: {low: 0.1, high: 1.0}", "optim.lr.type: missing"),
        ("optim.lr: {type: float, low: 1.0, high: 0.5}", "optim.lr: low (1.0)"),
        ("epochs: {type: int, low: 5, high: 5}", "epochs: low (5) must be < high"),
        ("optim.lr: {type: float, low: 0.0, high: 1.0, log: true}", "log scale needs low > 0"),
        ("epochs: {type: int, low: 0, high: 9, log: true}", "log scale needs low > 0"),
        ("optim.lr: {type: float, low: 0.1, high: 1.0, log: true, step: 0.1}", "step cannot"),
        ("optim.lr: {type: float, lo: 0.1, high: 1.0}", "optim.lr.lo: unknown key"),
        ("method.name: {type: categorical, choices: []}", "method.name.choices: "),
        ("method.name: {type: categorical, choices: [ibp, ibp]}", "duplicate choice 'ibp'"),
        ("method.name: {type: categorical, choices: [[1, 2]]}", "method.name.choices.0"),
        ("optim.lr: 0.1", "optim.lr: expected a mapping with a type"),
        (
            "optim.lr: {type: float, low: 0.1, high: 1.0}\n"
            "  optim.lr: {type: float, low: 1, high: 2}",
            "duplicate key 'optim.lr'",
        ),
        (
            "method.alpha: {type: float, low: 0.1, high: 0.5, when: {method.nam: ibp}}",
            "method.alpha (from {path}): condition on unknown parameter 'method.nam'",
        ),
        (
            "method.alpha: {type: float, low: 0.1, high: 0.5, when: {method.name: cc-ibp}}\n"
            "  method.name: {type: categorical, choices: [cc-ibp, ibp]}",
            "condition on 'method.name', which is not defined before it",
        ),
        (
            "optim.lr: {type: float, low: 0.1, high: 1.0}\n"
            "  optim.decay: {type: float, low: 0.1, high: 1.0, when: {optim.lr: 0.5}}",
            "condition on 'optim.lr', which is not categorical",
        ),
        (
            "method.name: {type: categorical, choices: [ibp, sabr]}\n"
            "  method.sabr_lambda: {type: float, low: 0.1, high: 0.5,"
            " when: {method.name: {nt: 1}}}",
            "method.sabr_lambda.when.method.name: a condition is a value",
        ),
        ("optim/lr: {type: float, low: 0.1, high: 1.0}", "optim/lr (from {path}): not a dotted"),
    ],
)
def test_bad_specs_name_the_file_and_the_key(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, f"parameters:\n  {body}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert str(path) in message
    assert expected.format(path=path) in message


def test_file_level_errors(tmp_path: Path) -> None:
    typo = write(tmp_path, "paramters: {}\n", "typo.yaml")
    with pytest.raises(SearchSpaceError, match=r"typo\.yaml:\n  paramters: unknown key"):
        load_space(typo)
    with pytest.raises(SearchSpaceError, match=r"unknown search-space preset 'certifed'"):
        load_space("certifed")
    with pytest.raises(SearchSpaceError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")
    write(tmp_path, "include: [b.yaml]\n", "a.yaml")
    write(tmp_path, "include: [a.yaml]\n", "b.yaml")
    with pytest.raises(SearchSpaceError, match="include cycle"):
        load_space(tmp_path / "a.yaml")
    write(tmp_path, "parameters:\n  optim.lr: {type: float, low: 0.1, high: 1.0}\n", "lr.yaml")
    both = write(tmp_path, "include: [certified, lr.yaml]\n", "both.yaml")
    with pytest.raises(SearchSpaceError) as info:
        load_space(both)
    message = str(info.value)
    assert "'optim.lr' is defined in both" in message and str(tmp_path / "lr.yaml") in message


# -- Ray Tune's OptunaSearch -----------------------------------------------------------------


def test_ray_optuna_search_suggests_flat_dotted_configs_without_a_cluster(tmp_path: Path) -> None:
    import ray
    from ray.tune.search.optuna import OptunaSearch

    space = load_space("certified")
    searcher = OptunaSearch(
        space=space.define_by_run({"epochs": 160}),
        metric=["clean_acc", "cert_acc"],
        mode=["max", "max"],
        seed=0,
    )
    assert searcher.set_search_properties(None, None, {}) is False  # the space is already set
    for i in range(3):
        config = searcher.suggest(f"trial_{i}")
        assert config["epochs"] == 160
        active = {key: value for key, value in config.items() if key != "epochs"}
        assert set(active) == expected_certified(active)  # dotted keys, not nested dicts
        assert not any(isinstance(value, dict) for value in config.values())
        load_config(BASE_CONFIG, overrides=config)
        searcher.on_trial_complete(f"trial_{i}", {"clean_acc": 0.5, "cert_acc": 0.1 * i})
    # Tune checkpoints the searcher with plain pickle, define-by-run function included.
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = OptunaSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert set(restored.suggest("trial_3")) >= CERTIFIED_ALWAYS | {"epochs"}
    assert not ray.is_initialized()
