"""The `gan` command's contract: exit codes, nothing written on bad input, light imports."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gancore.cli import main
from helpers import PARAMS, REPO, overrides


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
        # a value the plugin refuses when it builds, refused before prepare runs
        (["model.options.init=foo"], "init='foo'; allowed: he, torch"),
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


def test_bad_out_root_and_port_exit_2_and_create_nothing(tmp_path, capsys):
    """A file as --out, a missing --root (the UI created it and an empty mlflow.db in it) and a port
    outside 1-65535 (mlflow's bind traceback) are usage errors."""
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["prepare", "--params", str(PARAMS), "--out", str(afile), "-S", "tracking.enabled=false"]) == 2
    assert "--out: " in capsys.readouterr().err and afile.read_text() == ""
    # a folder that cannot be made (under a file): a traceback before, and a tracked run left RUNNING;
    # refused now before the tracker opens a run
    under_a_file = afile / "run"
    assert main(["prepare", "--params", str(PARAMS), "--out", str(under_a_file)]) == 2
    err = capsys.readouterr().err
    assert f"--out: {str(under_a_file)!r} cannot be created: {str(afile)!r} is a file; pass a folder you can write to" in err
    assert "Traceback" not in err and sorted(tmp_path.iterdir()) == [afile]
    missing = tmp_path / "nonexistent"
    assert main(["ui", "--root", str(missing)]) == 2
    assert "--root: " in capsys.readouterr().err and not missing.exists()
    for argv in (["ui", "--port", "99999"], ["tracking-server", "--port", "0"], ["ui", "--workers", "0"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert "no TCP port; use 1-65535" in capsys.readouterr().err


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
    assert "gan: hint: gan COMMAND --help lists a command's options" in result.stderr
    # -S before the command was "invalid choice: 'train.steps=300'" and nothing more
    result = subprocess.run([str(gan), "-S", "train.steps=300", "train"], capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 2 and "gan: hint: -S/--set goes after the command, e.g. gan train -S train.steps=300" in result.stderr


def test_a_flow_option_given_to_a_stage_names_the_flow_it_belongs_to(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--repeats", "3", "--seed=2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unrecognized arguments: --repeats 3 --seed=2" in err
    assert "--repeats is gan-remedy's (python -m gancore_flows.remedy --repeats N" in err
    assert "--seed is gan-sweep's (python -m gancore_flows.sweep --seed 0 --seed 1); one run's seed is -S seed=N" in err


# -- bad input: one line naming the file or key and what to do; exit 2 for usage and parameters,
# 1 for data; nothing half written ----------------------------------------------------------------
def _run(args, tmp_path, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def test_a_params_file_that_is_yaml_but_not_a_mapping(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("- ring8\n- mlp\n")
    code, err = _run(["prepare", "--params", str(path), "--out", str(tmp_path / "out")], tmp_path, capsys)
    assert code == 2 and str(path) in err and "holds a list, not a mapping of sections" in err
    assert not (tmp_path / "out").exists()


def test_an_override_without_equals_sign(tmp_path, capsys):
    code, err = _run(["train", "--params", str(REPO / "params.yaml"), "--out", str(tmp_path), "-S", "train.steps"], tmp_path, capsys)
    assert code == 2 and "train.steps" in err and "key.path=value" in err
    assert _files(tmp_path) == []


def test_an_unknown_stage_lists_the_stages(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gancore.cli", "trian"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'trian'" in result.stderr and all(
        s in result.stderr for s in ("prepare", "train", "sample", "evaluate", "diagnose")
    )


def test_a_batch_larger_than_the_data_is_a_parameter_error(tmp_path, capsys):
    sets = ["-S", "data.n_train=100", "-S", "data.n_test=50", "-S", "tracking.enabled=false", "-S", "mixture.enabled=false"]
    assert main(["prepare", "--params", str(REPO / "params.yaml"), "--out", str(tmp_path), *sets]) == 0
    capsys.readouterr()
    before = sorted(_files(tmp_path))
    code, err = _run(
        ["train", "--params", str(REPO / "params.yaml"), "--out", str(tmp_path), *sets, "-S", "train.batch_size=256"], tmp_path, capsys
    )
    assert (
        code == 2
        and "train.batch_size: 256 samples per step are more than the 100 training examples" in err
        and "use train.batch_size at most 100" in err
    )
    assert sorted(_files(tmp_path)) == before  # nothing written


def test_a_truncated_checkpoint_names_the_file_and_offers_restart(tmp_path, capsys):
    sets = overrides(
        "data.n_train=256",
        "data.n_test=64",
        "train.steps=4",
        "train.batch_size=32",
        "train.checkpoint_every=2",
        "tracking.enabled=false",
        "mixture.enabled=false",
        "model.options.hidden=8",
    )
    args = ["--params", str(REPO / "params.yaml"), "--out", str(tmp_path), *sets]
    assert main(["prepare", *args]) == 0 and main(["train", *args]) == 0
    ckpt = tmp_path / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    capsys.readouterr()
    code, err = _run(["train", *args], tmp_path, capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert str(ckpt) in err and "gan train --restart" in err
    assert main(["train", "--restart", *args]) == 0


def _png(path, mode, size=(12, 10)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(len(str(path)))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    elif mode == "P":
        image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
        array = rng.integers(0, 255, (*size[::-1], channels), dtype=np.uint8)
        image = Image.fromarray(array[..., 0] if channels == 1 else array, mode)
    image.save(path)


def test_an_image_folder_of_mixed_modes_is_converted(tmp_path, capsys):
    from gancore.data.images import load_rgb

    folder = tmp_path / "images"
    folder.mkdir()
    for i, mode in enumerate(["L", "RGB", "RGBA", "LA", "P", "I;16"] * 3):
        _png(folder / f"{i:02d}-{mode.replace(';', '')}.png", mode)
    sixteen = load_rgb(folder / "05-I16.png")
    assert sixteen.mode == "RGB" and 0 < sum(sixteen.getextrema()[0]) < 510  # scaled to 8 bits, not clipped to white
    sets = overrides(
        "data.name=image_folder",
        f"data.path={folder}",
        "data.image_size=8",
        "data.n_test=3",
        "mixture.enabled=false",
        "tracking.enabled=false",
    )
    assert main(["prepare", "--params", str(REPO / "params.yaml"), "--out", str(tmp_path / "out"), *sets]) == 0
    import torch

    data = torch.load(tmp_path / "out" / "data" / "prepared" / "data.pt", weights_only=True)
    assert data["train"].shape == (15, 3, 8, 8) and data["test"].shape == (3, 3, 8, 8)


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_corrupt_images_are_named_and_failed_or_skipped(tmp_path, capsys, policy):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(20):
        _png(folder / f"good{i:02d}.png", "RGB")
    (folder / "bad-truncated.png").write_bytes((folder / "good00.png").read_bytes()[:40])
    (folder / "bad-noise.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    sets = overrides(
        "data.name=image_folder",
        f"data.path={folder}",
        "data.image_size=8",
        "data.n_test=4",
        f"data.on_bad_image={policy}",
        "mixture.enabled=false",
        "tracking.enabled=false",
    )
    with pytest.warns(UserWarning, match="2 image") if policy == "skip" else contextlib.nullcontext():
        code = main(["prepare", "--params", str(REPO / "params.yaml"), "--out", str(out), *sets])
    err = capsys.readouterr().err
    if policy == "fail":
        assert code == 1 and "2 image(s)" in err and "bad-truncated.png" in err and "bad-noise.jpg" in err
        assert "data.on_bad_image=skip" in err
        assert not (out / "data" / "prepared" / "meta.json").exists()
    else:
        import torch

        assert code == 0
        data = torch.load(out / "data" / "prepared" / "data.pt", weights_only=True)
        assert len(data["train"]) + len(data["test"]) == 20


def test_the_projects_own_warnings_are_one_line_under_the_command():
    """NDB's bins beyond what the samples show, a test split of copies, ...: gancore's warnings
    came in Python's format (the file and line, then the source line that warned)."""
    import warnings

    import gancore.diagnostics.spaces as spaces
    from gancore.cli import plain_warnings

    plain_warnings("gan diagnose")
    said = warnings.formatwarning("NDB cannot see most bins", UserWarning, spaces.__file__, 131)
    assert said == "gan diagnose: warning: NDB cannot see most bins\n"
    said = warnings.formatwarning("another package's", UserWarning, warnings.__file__, 1)
    assert said.startswith(f"{warnings.__file__}:1: UserWarning: another package's")
