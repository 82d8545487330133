"""Search spaces as data (YAML presets in ``presets/``) and their translation to Optuna.

``load_space("full", overrides)`` reads a preset or file; ``space.define_by_run(fixed)`` is
the function for Ray Tune's ``OptunaSearch(space=...)``; ``space.sample_config(trial)`` is the
same sampling for plain Optuna studies. Sampled configs are flat dicts of dotted
training-config keys, ready for ``trainables.config.load_config(base, overrides=...)``.
"""

from search_spaces.space import (
    PRESETS_DIR,
    CategoricalParam,
    Condition,
    DefineByRun,
    FloatParam,
    IntParam,
    ParamSpec,
    SearchSpace,
    SearchSpaceError,
    list_presets,
    load_space,
)

__all__ = [
    "PRESETS_DIR",
    "CategoricalParam",
    "Condition",
    "DefineByRun",
    "FloatParam",
    "IntParam",
    "ParamSpec",
    "SearchSpace",
    "SearchSpaceError",
    "list_presets",
    "load_space",
]
