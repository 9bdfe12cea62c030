"""``data.name: points``: a user's .npy or .csv file, validated cell by cell, standardised, its
clusters found, and its samples given back in the file's units."""

from __future__ import annotations

import csv
import subprocess

import numpy as np
import pytest
import torch

from gancore.config import ParamsError, load_params
from gancore.data.points import MIN_ROWS, PointsError, load_points, point_dims
from helpers import PARAMS, venv_env


def _blobs(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 1.0], [0.0, 9.0, -2.0]])
    labels = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    return (centres[labels] + rng.standard_normal((n, 3)) * [1.0, 0.5, 0.2]) * [1.0, 1000.0, 0.001] + [5.0, -3e4, 0.0]


def test_csv_with_header_and_npy_read_the_same(tmp_path):
    x = _blobs(100)
    np.savetxt(tmp_path / "a.csv", x, delimiter=";", header="a;b;c", comments="")
    np.save(tmp_path / "a.npy", x)
    from_csv, names = load_points(tmp_path / "a.csv")
    from_npy, npy_names = load_points(tmp_path / "a.npy")
    assert names == ["a", "b", "c"] and npy_names == ["x0", "x1", "x2"]
    np.testing.assert_allclose(from_csv, x, rtol=1e-15)
    np.testing.assert_array_equal(from_npy, x)
    assert point_dims(tmp_path / "a.csv") == point_dims(tmp_path / "a.npy") == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ("x,y\n1,2\n3,abc\n", r"row 3, column 'y': 'abc' is not a number"),
        ("x,y\n1,2\n3,nan\n", r"row 3, column 'y': NaN \(1 non-finite values in all\)"),
        ("1,2\n3,inf\n", r"row 2, column 'x1': inf"),
        ("x,y\n1,2\n3\n", r"row 3: 1 values where the file has 2 columns \(x, y\)"),
        ("x,y\n" + "1,2\n" * 5, rf"has 5 rows; points need at least {MIN_ROWS}"),
        ("", r"is empty"),
    ],
)
def test_bad_csv_names_the_file_the_row_and_the_column(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(PointsError, match=message) as err:
        load_points(path)
    assert str(path) in str(err.value)


def test_bad_files_are_refused_before_anything_runs(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((4, 2, 2)))
    (tmp_path / "table.txt").write_text("1,2\n")
    for path, message in (
        (tmp_path / "missing.csv", "does not exist"),
        (tmp_path / "table.txt", "is not a .npy or .csv file"),
        (tmp_path / "cube.npy", r"shape \[4, 2, 2\]; points need \[N, d\]"),
    ):
        with pytest.raises(ParamsError, match=rf"data.path: .*{message}"):
            load_params(PARAMS, ["data.name=points", f"data.path={path}"], check_plugins=False)
    with pytest.raises(ParamsError, match="data.path: required for data.name=points"):
        load_params(PARAMS, ["data.name=points"], check_plugins=False)


def test_gan_prepare_exits_2_on_a_missing_file_and_writes_nothing(tmp_path):
    done = subprocess.run(
        [
            "gan",
            "prepare",
            "--params",
            str(PARAMS),
            "-S",
            "data.name=points",
            "-S",
            f"data.path={tmp_path / 'none.csv'}",
            "--out",
            str(tmp_path / "out"),
        ],
        env=venv_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "data.path" in done.stderr and "does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


def test_prepare_standardises_finds_the_clusters_and_samples_come_back_in_units(tmp_path):
    """Three clusters of unequal weights, columns in units 1e6 apart: prepare finds 3, the mixture
    trains one part each, and samples.csv is in the file's units."""
    from gancore.data.prepare import prepare_data
    from gancore.data.prepared import load_prepared
    from gancore.layout import Layout
    from gancore.stages import run_stage

    x = _blobs()
    np.savetxt(tmp_path / "blobs.csv", x, delimiter=",", header="length,mass,charge", comments="")
    sets = [f"data.path={tmp_path / 'blobs.csv'}", "data.name=points", "mixture.steps=40", "train.monitor_every=20"]
    params = load_params(PARAMS, [*sets, "device=cpu", "tracking.enabled=false", "train.checkpoint_every=1000"])
    layout = Layout(tmp_path / "run")
    prepare_data(params, layout)
    data = load_prepared(layout.prepared)
    units = data.meta["units"]
    assert units["columns"] == ["length", "mass", "charge"]
    assert torch.allclose(data.train.double().mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(data.train.double().std(0), torch.ones(3, dtype=torch.float64), atol=1e-4)
    assert data.meta["modes"]["count"] == 3 and data.meta["mixture"]["parts"] == 3
    assert data.meta["source"]["rows"] == 3000 and len(data.meta["source"]["sha256"]) == 64
    assert (layout.prepared / "parts_selection.png").stat().st_size > 1000
    for stage in ("train", "sample", "evaluate", "diagnose"):
        run_stage(stage, params, layout)
    with open(layout.samples / "samples.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["length", "mass", "charge"] and len(rows) == 1 + params.n_samples
    back = np.array(rows[1:], dtype=np.float64)
    # In the file's units: the column means sit where the data's do, scale by scale.
    assert np.all(np.abs(back.mean(0) - x.mean(0)) < 2 * x.std(0))
    assert np.all(back.std(0) > 0.05 * x.std(0)) and np.all(back.std(0) < 20 * x.std(0))
