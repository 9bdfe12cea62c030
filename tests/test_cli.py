"""The `gan` command's contract: exit codes, nothing written on bad input, light imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gancore.cli import main
from helpers import REPO


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.name=celeba"], "data.name"),
        (["loss.name=wgan"], "loss.name"),
        (["model.arch=nope"], "model.arch"),
        (["train.steps=-5"], "train.steps"),
        (["train.stepz=5"], "train.stepz"),
        (["train.batch_size=big"], "train.batch_size"),
    ],
)
@pytest.mark.parametrize("stage", ["prepare", "train"])
def test_invalid_parameters_exit_2_and_write_nothing(tmp_path, capsys, stage, overrides, key):
    args = [stage, "--params", str(REPO / "params.yaml"), "--out", str(tmp_path)]
    for o in overrides:
        args += ["-S", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert key in err and "invalid parameters" in err
    assert _files(tmp_path) == []


def test_missing_params_file_exits_2(tmp_path, capsys):
    assert main(["prepare", "--params", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_is_fast_and_imports_no_heavy_modules():
    code = (
        "import sys, gancore.cli\n"
        "heavy = [m for m in ('torch', 'prefect', 'mlflow', 'dvc') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "try:\n    gancore.cli.main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "prepare" in result.stdout and "diagnose" in result.stdout


def test_gan_console_script_reports_usage_errors_with_exit_2():
    gan = Path(sys.executable).with_name("gan")
    result = subprocess.run([str(gan), "train", "--bogus-flag"], capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
