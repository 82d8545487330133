"""Scratch: a method added in one file + one registry entry + one preset entry works end to end."""

import optuna
import pytest
from training_helpers import digits_config

from search_spaces import load_space
from trainables.config import ConfigError, config_keys, load_config
from trainables.methods import method_names
from trainables.training.loop import train


def test_the_toy_method_is_registered_validated_searched_and_trains() -> None:
    assert "margin-ibp" in method_names("certified") and "method.margin" in config_keys()
    config = load_config({"method.name": "margin-ibp", "method.margin": 0.5})
    assert config.method.margin == 0.5
    with pytest.raises(ConfigError, match="method.alpha: not a setting of method.name='margin-ibp'"):
        load_config({"method.name": "margin-ibp", "method.alpha": 0.1})
    space = load_space("certified")
    space.validate_against(config_keys())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampled = [space.sample_config(study.ask()) for _ in range(40)]
    toy = [c for c in sampled if c["method.name"] == "margin-ibp"]
    assert toy and all("method.margin" in c for c in toy)
    result = train(load_config(digits_config({"method.name": "margin-ibp", "epochs": 4,
                                              "eps_schedule.length": 2})))
    assert result.status == "completed" and "test_cert_acc" in result.final
    print(result.final, result.history[-1]["loss_robust"])
