"""The stages refuse inputs an earlier stage made under other settings: data prepared otherwise
(gancore.data.settings: ``gan train -S data.n_train=1000`` after ``gan prepare`` trained the
50,000 points prepared), and samples another generator drew (gancore.sampling.stale_samples)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gancore.cli import main
from gancore.config import load_params
from gancore.data import load_prepared
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
        ("sample", ["data.name=grid25"], 'data.name: "ring8" then, "grid25" now'),
    ):
        assert _gan(stage, tmp_path, *sets) == 1, sets
        err = capsys.readouterr().err
        assert f"meta.json was made under other settings ({differ}): run `gan prepare` with these parameters" in err
        assert _files(tmp_path) == before  # nothing trained, nothing written
    # the device changes how prepare computes, not which data: it passes, as do the same settings
    assert _gan("train", tmp_path, "device=cpu") == 0 and layout.generator.exists()
    # so does training's own seed, which draws no data (the top-level seed=3 above was refused)
    assert _gan("train", tmp_path, "train.seed=3", flags=("--restart",)) == 0
    assert _gan("sample", tmp_path) == 0
    # prepared again with them, the settings train
    assert _gan("prepare", tmp_path, "data.n_train=200") == 0 and _gan("train", tmp_path, "data.n_train=200", flags=("--restart",)) == 0


def test_stages_after_training_refuse_another_kind_of_model_and_every_stage_needs_prepare_first(tmp_path, capsys):
    """``gan sample`` drew from whatever models/ held: a single GAN under mixture.enabled=true (the
    default), a mixture under false, and evaluate and diagnose recorded its figures under the
    settings asked for. Before prepare, train printed a mixture's plan as "one GAN" and then asked
    for mixture.json."""
    for stage in ("train", "sample", "evaluate"):
        assert _gan(stage, tmp_path) == 1
        assert f"{tmp_path / 'data' / 'prepared' / 'meta.json'} is missing: run `gan prepare` first" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*"))  # refused before a run was opened or a file or folder written

    assert _gan("prepare", tmp_path) == 0 and _gan("train", tmp_path) == 0 and _gan("sample", tmp_path) == 0
    layout = Layout(tmp_path)
    capsys.readouterr()
    before = _files(tmp_path)
    for stage in ("sample", "evaluate", "diagnose"):
        assert _gan(stage, tmp_path, "mixture.enabled=true") == 1, stage
        err = capsys.readouterr().err
        assert f"{layout.models} holds one GAN ({layout.generator}), and these parameters ask for a mixture of GANs" in err
    assert _files(tmp_path) == before
    layout.mixture.write_text("{}")  # what a mixture trained here leaves
    assert _gan("sample", tmp_path) == 1
    err = capsys.readouterr().err
    assert f"holds a mixture of GANs ({layout.mixture}), and these parameters ask for one GAN (mixture.enabled=false)" in err


def test_more_ndb_bins_than_examples_prepared_are_refused_before_training(tmp_path, capsys):
    """A small data set passed prepare, train, sample and evaluate, then failed in diagnose on
    diagnose.ndb_bins (100 by default) as an invalid parameter: refused now where training starts."""
    assert _gan("prepare", tmp_path, "data.n_train=60") == 0
    capsys.readouterr()
    before = _files(tmp_path)
    assert _gan("train", tmp_path, "data.n_train=60") == 2
    err = capsys.readouterr().err
    assert f"invalid parameters in params for the data in {tmp_path / 'data' / 'prepared'}:" in err
    assert "diagnose.ndb_bins: 100 bins exceed the 60 training examples: use at most 60, or add examples to the data" in err
    assert _files(tmp_path) == before
    assert _gan("train", tmp_path, "data.n_train=60", "diagnose.ndb_bins=20") == 0


def test_a_held_out_split_too_small_to_score_is_refused_before_training_naming_what_can_help(tmp_path, capsys):
    """Evaluate refused a folder of 50 images only after training, saying to raise
    evaluate.max_real, which was far above the 5 held-out images and could not help."""
    assert _gan("prepare", tmp_path, "data.n_test=4", "diagnose.ndb_bins=20") == 0
    capsys.readouterr()
    before = _files(tmp_path)
    assert _gan("train", tmp_path, "data.n_test=4", "diagnose.ndb_bins=20") == 2
    err = capsys.readouterr().err
    assert (
        "evaluate.splits: 4 real examples cannot fill 10 splits: raise data.n_test or add examples to the data, or lower evaluate.splits"
    ) in err
    assert "data.n_test: 4 real examples are too few for 5 nearest neighbours" in err
    assert "max_real" not in err
    assert _files(tmp_path) == before


def test_settings_with_the_same_effect_pass(tmp_path, monkeypatch):
    points = tmp_path / "pts.csv"
    points.write_text("x,y\n0,0\n1,1\n")
    monkeypatch.chdir(tmp_path)
    prepared = load_params(PARAMS, ["data.name=points", "data.path=pts.csv"])
    # as prepare records them: the path as given, and the file it resolved to where prepare ran
    meta = {"settings": recorded(prepared), "source": {"path": str(points.resolve())}, "classifier": {"kind": "gaussian_posterior"}}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert other_settings(load_params(PARAMS, ["data.name=points", f"data.path={points}"]), meta) == []
    # prepare's own words pass: the project's file, also in a checkout elsewhere (`dvc pull` on
    # another machine, a moved project), where prepare's resolved path names no file of this one
    (elsewhere / "pts.csv").write_text("x,y\n5,5\n6,6\n")
    assert other_settings(load_params(PARAMS, ["data.name=points", "data.path=pts.csv"]), meta) == []
    # another file is refused, both named by the files they resolve to
    (tmp_path / "other.csv").write_text("x,y\n0,0\n1,2\n")
    for path in (str(tmp_path / "other.csv"), "../other.csv"):
        assert other_settings(load_params(PARAMS, ["data.name=points", f"data.path={path}"]), meta) == [
            f'data.path: "{points.resolve()}" then, "{(elsewhere / path).resolve()}" now'
        ]
    # vector data get the mixture's posterior whatever the epochs
    assert other_settings(load_params(PARAMS, ["data.name=points", f"data.path={points}", "data.classifier_epochs=0"]), meta) == []
    # on_bad_image matters where prepare left images out, and there alone
    skip = load_params(PARAMS, ["data.name=points", f"data.path={points}", "data.on_bad_image=skip"])
    assert other_settings(skip, meta) == []
    absolute = load_params(PARAMS, ["data.name=points", f"data.path={points}"])
    assert other_settings(absolute, {**meta, "settings": recorded(skip), "source": {"path": str(points), "skipped": 2}}) == [
        'data.on_bad_image: "skip" then, "fail" now'
    ]
    # images: null is the native size; epochs matter where a network was (or would be) trained
    mnist = load_params(PARAMS, ["data.name=mnist"])
    trained = {"settings": recorded(mnist), "shape": [1, 28, 28], "classifier": {"kind": "small_cnn", "epochs": 8}}
    assert other_settings(load_params(PARAMS, ["data.name=mnist", "data.image_size=28"]), trained) == []
    assert other_settings(load_params(PARAMS, ["data.name=mnist", "data.image_size=32"]), trained) == ["data.image_size: null then, 32 now"]
    assert other_settings(load_params(PARAMS, ["data.name=mnist", "data.classifier_epochs=2"]), trained) == [
        "data.classifier_epochs: 8 then, 2 now"
    ]
    unlabelled = {**trained, "classifier": {"kind": "none", "epochs": 0}}  # 8 epochs asked, no labels found
    assert other_settings(load_params(PARAMS, ["data.name=mnist", "data.classifier_epochs=2"]), unlabelled) == []
    none_asked = {**unlabelled, "settings": recorded(load_params(PARAMS, ["data.name=mnist", "data.classifier_epochs=0"]))}
    assert other_settings(mnist, none_asked) == ["data.classifier_epochs: 0 then, 8 now"]
    # null beside the count prepared (every example, or the default count) is the same data
    counted = {**trained, "count": 60_000, "count_test": 10_000}
    assert other_settings(load_params(PARAMS, ["data.name=mnist", "data.n_train=60000", "data.n_test=10000"]), counted) == []
    assert other_settings(load_params(PARAMS, ["data.name=mnist", "data.n_train=59999"]), counted) == ["data.n_train: null then, 59999 now"]
    subset = {**counted, "settings": recorded(load_params(PARAMS, ["data.name=mnist", "data.n_train=60000"]))}
    assert other_settings(mnist, subset) == []
    assert other_settings(mnist, {k: v for k, v in subset.items() if k != "count"}) == ["data.n_train: 60000 then, null now"]
    # data prepared before the record, and a setting added since, are not checked
    assert other_settings(load_params(PARAMS, ["seed=4"]), {}) == []
    old = recorded(mnist)
    del old["data"]["n_test"]
    assert other_settings(load_params(PARAMS, ["data.name=mnist", "data.n_test=50"]), {**trained, "settings": old}) == []


@pytest.mark.skipif(os.name != "posix", reason="paths")
def test_null_and_the_count_it_takes_prepare_the_same_data(tmp_path):
    """What the n_train / n_test rule above rests on: toy data (null is the default count) and a
    points file (null is every row, or a tenth held out) prepare the same bytes either way."""
    rows = np.random.default_rng(0).normal(size=(400, 2))
    np.savetxt(tmp_path / "pts.csv", rows, delimiter=",", header="a,b", comments="")
    for data, null, counted in (
        (["data.name=ring8", "data.n_test=null"], ["data.n_train=null"], ["data.n_train=50000"]),
        (
            ["data.name=points", f"data.path={tmp_path / 'pts.csv'}"],
            ["data.n_train=null", "data.n_test=null"],
            ["data.n_train=360", "data.n_test=40"],
        ),
    ):
        prepared = []
        for sets in (null, counted):
            out = tmp_path / "-".join(sets)
            assert main(["prepare", "--params", str(PARAMS), "--out", str(out), *overrides(*BASE, *data, *sets)]) == 0
            meta = json.loads(Layout(out).prepared_meta.read_text())
            prepared.append(load_prepared(Layout(out).prepared))
        assert torch.equal(prepared[0].train, prepared[1].train) and torch.equal(prepared[0].test, prepared[1].test), data
        assert other_settings(load_params(PARAMS, [*BASE, *data, *null]), meta) == []  # meta: the counted one's


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
    assert 'data.on_bad_image: "skip" then, "fail" now' in capsys.readouterr().err


def test_evaluate_and_diagnose_refuse_samples_a_generator_trained_since_did_not_draw(tmp_path, capsys):
    """``gan sample``, then ``gan train`` further, then ``gan evaluate`` scored the old generator's
    samples and recorded the longer run's parameters."""
    for stage in ("prepare", "train", "sample"):
        assert _gan(stage, tmp_path) == 0
    layout = Layout(tmp_path)
    drawn = layout.samples_file.read_bytes()
    assert _gan("train", tmp_path, "train.steps=4") == 0  # continues the run: a new generator.pt
    capsys.readouterr()
    before = _files(tmp_path)
    for stage in ("evaluate", "diagnose"):
        assert _gan(stage, tmp_path, "train.steps=4") == 1
        err = capsys.readouterr().err
        assert "samples.pt holds other samples than these parameters draw: models/generator.pt changed since they were drawn" in err
        assert "Run `gan sample`" in err and _files(tmp_path) == before
    # another sample.n is refused too
    assert _gan("sample", tmp_path, "train.steps=4") == 0 and layout.samples_file.read_bytes() != drawn
    n = len(torch.load(layout.samples_file, weights_only=True)["x"])
    capsys.readouterr()
    assert _gan("evaluate", tmp_path, "train.steps=4", "sample.n=100") == 1
    assert f"{n} were drawn, sample.n asks for 100" in capsys.readouterr().err
    assert _gan("evaluate", tmp_path, "train.steps=4") == 0 and _gan("diagnose", tmp_path, "train.steps=4") == 0
    # the samples without the generators that drew them (a checkout of the samples alone): nothing to compare
    assert _gan("train", tmp_path, "train.steps=6") == 0
    layout.models.rename(tmp_path / "models-elsewhere")
    assert _gan("evaluate", tmp_path, "train.steps=6") == 0
