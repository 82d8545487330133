"""``certsweep``: one command; its help is light (no torch, Ray or pandas), every command's
help works, defaults are shown, and ``--set`` overrides sweep keys as it does training keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import write_short_demo

from sweeps.cli import COMMANDS, main
from sweeps.config import SweepConfigError, check_sweep

HEAVY = ("torch", "ray", "pandas", "pyarrow", "optuna", "matplotlib")
#: Each ``--help`` in one process, then the heavy packages that process imported.
PROBE = """
import sys
from sweeps.cli import main
for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit as done:
        assert done.code == 0, (argv, done.code)
print(sorted({{name.split(".")[0] for name in sys.modules}} & set({heavy!r})))
"""


def test_help_imports_nothing_heavy() -> None:
    """``certsweep --help`` and every command's help import none of the heavy packages."""
    light = [["--help"], *([name, "--help"] for name in COMMANDS)]
    code = PROBE.format(argvs=light, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert all(f"  {name} " in done.stdout or f"  {name}\n" in done.stdout for name in COMMANDS)


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "certsweep"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("certsweep ")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_defaults(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: certsweep {name} ")
    if name in ("recertify", "certify"):
        assert "(default: test)" in text  # the split


def test_an_unknown_command_is_one_error(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["rn", "x.yaml"])
    assert done.value.code == 2 and "invalid choice: 'rn'" in capsys.readouterr().err


def test_set_overrides_sweep_keys(tmp_path, capsys) -> None:
    path = write_short_demo(tmp_path)
    sets = {
        "sampler.seed": 3,
        "training.eps": 0.05,
        "space.overrides.optim.lr": None,  # null removes a parameter, as in the file
        "loggers": ["tensorboard"],
    }
    sweep = check_sweep(path, sets).sweep
    assert sweep.sampler.seed == 3 and sweep.training["eps"] == 0.05
    assert "optim.lr" not in sweep.search_space().parameters
    assert [logger.name for logger in sweep.loggers] == ["tensorboard"]
    with pytest.raises(SweepConfigError, match=r"sampler\.seedd: unknown key"):
        check_sweep(path, {"sampler.seedd": 1})
    with pytest.raises(SweepConfigError, match=r"--set name\.x: name is not a mapping"):
        check_sweep(path, {"name.x": 1})
    assert main(["validate", str(path), "--set", "sampler.seed=2", "--set", "num_trials=5"]) == 0
    assert "(5 trials)" in capsys.readouterr().out
    assert main(["validate", str(path), "--set", "sampler.name=tpee"]) == 2
    err = capsys.readouterr().err
    assert "sampler.name: Input should be" in err and "(given on the command line)" in err
