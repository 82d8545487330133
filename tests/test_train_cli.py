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
