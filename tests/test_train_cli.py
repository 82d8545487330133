"""``python -m trainables.train``: a run prints its summary; bad input is one clear error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from trainables.train import main

CONFIG = Path(__file__).parents[1] / "trainables" / "configs" / "digits.yaml"


def test_cli_trains_and_prints_the_final_table(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "--config",
            str(CONFIG),
            "--set",
            "epochs=3",
            "--set",
            "eps_schedule.length=1",
            "--set",
            "eval.final_subset=40",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "status: completed after 3 epoch(s)" in printed
    assert "test_cert_acc" in printed and re.search(r"test_verifier +best\n", printed)
    assert "test_cert_by_crown_ibp" in printed  # the cascade's per-stage shares
    assert f"checkpoint: {out / 'checkpoint.pt'}" in printed
    assert (out / "checkpoint.pt").is_file()


def test_cli_rejects_a_bad_key_naming_it(capsys) -> None:
    assert main(["--config", str(CONFIG), "--set", "optim.lrr=0.1"]) == 2
    assert "optim.lrr: unknown key" in capsys.readouterr().err


def test_cli_show_config_resolves_overrides(capsys) -> None:
    assert main(["--config", str(CONFIG), "--set", "method.name=ibp", "--show-config"]) == 0
    printed = capsys.readouterr().out
    assert "name: ibp" in printed and "dir: runs/" in printed


def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainables.train", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--set" in done.stdout


def test_every_bad_input_is_one_message_and_exit_code_2(tmp_path, capsys) -> None:
    cases = {
        "model.name=cnn_smal": "model.name: unknown model 'cnn_smal' (did you mean cnn_small?)",
        "epochs=2": "eps_schedule.start=2 + eps_schedule.length=8 - 1 = epoch 9",
        "device=cuda:99": "device='cuda:99': this machine has",
        "teacher.name=pgd-at-digit": "unknown teacher 'pgd-at-digit' (did you mean pgd-at-digits",
        "dataset.name=cifar10": "dataset 'cifar10' not found or incomplete",
        "optim.lr=[1, 1": "--set optim.lr: not valid YAML",
    }
    for pair, expected in cases.items():
        extra = ["--set", f"dataset.root={tmp_path}"] if "dataset" in pair else []
        assert main(["--config", str(CONFIG), "--set", pair, *extra]) == 2, pair
        assert expected in capsys.readouterr().err, pair


def test_a_python_tag_is_refused_and_runs_nothing(tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    value = f"seed=!!python/object/apply:os.system ['touch {marker}']"
    assert main(["--config", str(CONFIG), "--set", value]) == 2
    assert capsys.readouterr().err.startswith(
        "error: --set seed: the tag !!python/object/apply:os.system is not allowed"
    )
    assert not marker.exists()
