"""The stages after prepare refuse data prepared under other settings (gancore.data.settings):
``gan train -S data.n_train=1000`` after ``gan prepare`` trained the 50,000 points prepared."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gancore.cli import main
from gancore.config import load_params
from gancore.data.settings import other_settings, recorded
from gancore.layout import Layout
from helpers import PARAMS, overrides

BASE = ["data.n_train=300", "data.n_test=100", "train.steps=2", "train.batch_size=32", "mixture.enabled=false", "tracking.enabled=false"]


def _gan(stage: str, out: Path, *sets: str, flags: tuple[str, ...] = ()) -> int:
    return main([stage, "--params", str(PARAMS), "--out", str(out), *flags, *overrides(*BASE, *sets)])


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_stage_after_prepare_refuses_other_data_settings_and_writes_nothing(tmp_path, capsys):
    assert _gan("prepare", tmp_path) == 0
    layout = Layout(tmp_path)
    assert json.loads(layout.prepared_meta.read_text())["settings"]["data"]["n_train"] == 300
    capsys.readouterr()
    before = _files(tmp_path)
    for stage, sets, differ in (
        ("train", ["data.n_train=200"], "data.n_train: 300 then, 200 now"),
        ("train", ["seed=3", "data.n_test=50"], "seed: 0 then, 3 now; data.n_test: 100 then, 50 now"),
        ("sample", ["data.name=grid25"], "data.name: 'ring8' then, 'grid25' now"),
    ):
        assert _gan(stage, tmp_path, *sets) == 1, sets
        err = capsys.readouterr().err
        assert f"meta.json was made under other settings ({differ}): run `gan prepare` with these parameters" in err
        assert _files(tmp_path) == before  # nothing trained, nothing written
    # the device changes how prepare computes, not which data: it passes, as do the same settings
    assert _gan("train", tmp_path, "device=cpu") == 0 and layout.generator.exists()
    assert _gan("sample", tmp_path) == 0
    # prepared again with them, the settings train
    assert _gan("prepare", tmp_path, "data.n_train=200") == 0 and _gan("train", tmp_path, "data.n_train=200", flags=("--restart",)) == 0


def test_settings_with_the_same_effect_pass(tmp_path, monkeypatch):
    points = tmp_path / "pts.csv"
    points.write_text("x,y\n0,0\n1,1\n")
    monkeypatch.chdir(tmp_path)
    prepared = load_params(PARAMS, ["data.name=points", f"data.path={points}"])
    meta = {"settings": recorded(prepared), "source": {"path": str(points)}}
    # the same file, named relative to the working directory
    assert other_settings(load_params(PARAMS, ["data.name=points", "data.path=pts.csv"]), meta) == []
    other = tmp_path / "other.csv"
    other.write_text("x,y\n0,0\n1,2\n")
    assert other_settings(load_params(PARAMS, ["data.name=points", f"data.path={other}"]), meta) == [
        f"data.path: {str(points)!r} then, {str(other)!r} now"
    ]
    # on_bad_image matters where prepare left images out, and there alone
    skip = load_params(PARAMS, ["data.name=points", f"data.path={points}", "data.on_bad_image=skip"])
    assert other_settings(skip, meta) == []
    assert other_settings(prepared, {"settings": recorded(skip), "source": {"skipped": 2}}) == [
        "data.on_bad_image: 'skip' then, 'fail' now"
    ]
    # data prepared before the record, and a setting added since, are not checked
    assert other_settings(load_params(PARAMS, ["seed=4"]), {}) == []
    old = recorded(prepared)
    del old["data"]["classifier_epochs"]
    assert (
        other_settings(load_params(PARAMS, ["data.name=points", f"data.path={points}", "data.classifier_epochs=2"]), {"settings": old})
        == []
    )


@pytest.mark.skipif(os.name != "posix", reason="paths")
def test_an_image_folder_records_the_images_it_left_out(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"good{i:02d}.png")
    (folder / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    sets = ["data.name=image_folder", f"data.path={folder}", "data.image_size=8", "data.n_test=3", "data.classifier_epochs=0"]
    with pytest.warns(UserWarning, match="1 image"):
        assert main(["prepare", "--params", str(PARAMS), "--out", str(out), *overrides(*BASE[2:], *sets, "data.on_bad_image=skip")]) == 0
    assert json.loads(Layout(out).prepared_meta.read_text())["source"]["skipped"] == 1
    capsys.readouterr()
    # under fail, prepare would refuse the folder: the data prepared are not what it asks for
    assert main(["sample", "--params", str(PARAMS), "--out", str(out), *overrides(*BASE[2:], *sets)]) == 1
    assert "data.on_bad_image: 'skip' then, 'fail' now" in capsys.readouterr().err
