"""``data.name: points``: a user's .npy or .csv file, validated cell by cell, standardised, its
clusters found, and its samples given back in the file's units."""

from __future__ import annotations

import csv
import math
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
        # A typo in the first row of a file without a header was taken for a header, and the row dropped.
        ("0.5,1.2.3\n" + "1,2\n" * 30, r"row 1 mixes numbers and text \('1.2.3'\)"),
        ("temp\xe9rature,y\n" + "1,2\n" * 30, r"is not UTF-8 text \(byte 4: b'\\xe9'\); save it as UTF-8"),
        # pandas' to_csv with its index: the index was read as a third coordinate
        (",x,y\n" + "".join(f"{i},1,2\n" for i in range(30)), r"row 1 has a column without a name \(column 1\).*index=False"),
        # blank lines are skipped, and the row named is the file's line (it was 2 lines early here)
        ("x,y\n\n1,2\n\n3,abc\n", r"row 5, column 'y': 'abc' is not a number"),
    ],
    ids=["text cell", "nan", "inf", "short row", "few rows", "empty", "typo in row 1", "latin-1", "index column", "blank lines"],
)
def test_bad_csv_names_the_file_the_row_and_the_column(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(PointsError, match=message) as err:
        load_points(path)
    assert str(path) in str(err.value)


def test_bad_files_are_refused_before_anything_runs(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((4, 2, 2)))
    (tmp_path / "table.txt").write_text("1,2\n")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "archive.npz", x=np.zeros((30, 2)))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    np.save(tmp_path / "complex.npy", np.ones((30, 2), dtype=np.complex128))
    for path, message in (
        (tmp_path / "missing.csv", "does not exist"),
        (tmp_path / "folder.csv", "is a folder; give data.path a .npy or .csv file"),
        (tmp_path / "table.txt", "is not a .npy or .csv file"),
        (tmp_path / "cube.npy", r"shape \[4, 2, 2\]; points need \[N, d\]"),
        (tmp_path / "empty.npy", r"is not a readable .npy array"),  # np.load's EOFError was a traceback
        (tmp_path / "archive.npy", r"is a .npz archive, not one .npy array"),
    ):
        with pytest.raises(ParamsError, match=rf"data.path: .*{message}"):
            load_params(PARAMS, ["data.name=points", f"data.path={path}"], check_plugins=False)
    with pytest.raises(ParamsError, match="data.path: required for data.name=points"):
        load_params(PARAMS, ["data.name=points"], check_plugins=False)
    with pytest.raises(PointsError, match="holds complex128 values; points need real numbers"):
        load_points(tmp_path / "complex.npy")
    with pytest.raises(ParamsError, match="data.path: .* does not exist; give data.name=image_folder a folder of images"):
        load_params(PARAMS, ["data.name=image_folder", f"data.path={tmp_path / 'no-images'}", "data.image_size=32"], check_plugins=False)


def test_values_that_overflow_the_statistics_are_refused_naming_the_column(tmp_path):
    """Around 1e300 the variance overflows float64: the standardisation divided by inf and every
    value of the column became -0 (and meta.json held Infinity, not JSON)."""
    from gancore.data.points import prepare_points

    x = _blobs(100)
    x[:, 1] *= 1e296
    np.savetxt(tmp_path / "huge.csv", x, delimiter=",", header="a,b,c", comments="")
    with pytest.raises(PointsError, match=r"column 'b': values up to .*e\+30\d overflow the mean or standard deviation"):
        prepare_points(str(tmp_path / "huge.csv"), 0, None, None, 5)


def test_a_cluster_count_capped_at_max_parts_is_said(tmp_path):
    """20 separated blobs with mixture.max_parts=5: the points' modes were capped at 5 silently,
    where grid25 prints the warning (its parts are chosen in the partition)."""
    from gancore.data.points import prepare_points

    rng = np.random.default_rng(0)
    centres = rng.uniform(-100, 100, (20, 2))
    np.save(tmp_path / "blobs.npy", (centres[rng.integers(0, 20, 2000)] + rng.normal(0, 0.5, (2000, 2))).astype(np.float32))
    with pytest.warns(UserWarning, match="BIC was still falling at mixture.max_parts=5"):
        data = prepare_points(str(tmp_path / "blobs.npy"), 0, None, None, 5)
    assert data.meta["modes"]["count"] == 5 and data.meta["modes"]["selection"]["at_limit"]


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


def test_a_small_cluster_with_few_held_out_points_trains_under_the_monitor(tmp_path):
    """Held out (found by benchmarks/collapse.py --data strays): a cluster of 25 rows beside 3,000
    gets a part with a handful of held-out points (10 % of its rows), and the monitor compared the
    part's samples with them: the near-duplicate measure needs 4 and training stopped with an
    error. Such a part is compared with its own training points, as a part with none is. Three
    stray rows close together (0.01 apart, far out) are a part of 3 rows, which the measures
    cannot compare with at all (review): the monitor leaves those measures out for it."""
    import json

    from gancore.layout import Layout
    from gancore.stages import run_stage

    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [9.0, 9.0]])
    sizes = [1000, 1000, 1000, 25]
    x = np.concatenate([c + 0.4 * rng.standard_normal((m, 2)) for c, m in zip(centres, sizes)])
    x = np.concatenate([x, [[30.0, 30.0], [30.01, 30.0], [30.0, 30.01]]])
    np.savetxt(tmp_path / "small.csv", x[rng.permutation(len(x))], delimiter=",", header="a,b", comments="")
    sets = [f"data.path={tmp_path / 'small.csv'}", "data.name=points", "mixture.steps=40", "train.monitor_every=20"]
    params = load_params(PARAMS, [*sets, "device=cpu", "tracking.enabled=false", "train.checkpoint_every=1000"])
    layout = Layout(tmp_path / "run")
    run_stage("prepare", params, layout)
    parts = json.loads((layout.prepared / "mixture.json").read_text())["parts"]
    # the cases: a part of few held-out points (not none), and one of fewer than 4 rows
    assert 0 < min(p["count_test"] for p in parts if p["count"] > 20) < 4 and min(p["count"] for p in parts) < 4
    run_stage("train", params, layout)
    assert (layout.models / "mixture.json").is_file()


def test_a_refused_partition_leaves_the_previous_prepared_data_as_it_was(tmp_path, capsys):
    """mixture.parts larger than the data is refused before prepare replaces anything (it was
    refused after the new data.pt and meta.json were written, the old partition deleted); a file
    with a bad cell leaves no folder behind."""
    from gancore.cli import main

    good, small, bad = tmp_path / "good.csv", tmp_path / "small.csv", tmp_path / "bad.csv"
    np.savetxt(good, _blobs(200), delimiter=",", header="a,b,c", comments="")
    np.savetxt(small, _blobs(24), delimiter=",", header="a,b,c", comments="")
    bad.write_text("a,b\n" + "1,2\n" * 30 + "3,x\n")
    out = tmp_path / "run"

    def prepare(path, *sets):
        args = ["prepare", "--params", str(PARAMS), "--out", str(out), "-S", "data.name=points", "-S", f"data.path={path}"]
        return main(args + ["-S", "tracking.enabled=false", "-S", "mixture.enabled=true", *[a for s in sets for a in ("-S", s)]])

    assert prepare(good, "mixture.parts=3") == 0
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert prepare(small, "mixture.parts=30") == 2
    assert "mixture.parts: 30 parts for" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    fresh = tmp_path / "fresh"
    out = fresh
    assert prepare(bad) == 1 and "row 32, column 'b': 'x' is not a number" in capsys.readouterr().err
    assert not fresh.exists() or not any(fresh.rglob("*"))


def test_one_outlier_is_no_mode_and_joins_a_part(tmp_path, capsys):
    """ring8's 3,000 points and one point far outside. BIC made the outlier a cluster of its own,
    and as a part of one example the default mixture was refused at train ("fewer examples than a
    batch of 2"; found by a review); later it joined the nearest part but stayed a mode. Now the
    mixture's uniform background takes it: 8 modes, the outlier recorded and said, and the parts
    all train."""
    import json

    from gancore.cli import main
    from gancore.mixture import check_part_sizes

    rng = np.random.default_rng(2)
    angles = 2 * np.pi * rng.integers(0, 8, 3000) / 8
    ring = np.stack([np.cos(angles), np.sin(angles)], 1) + rng.normal(0, 0.02, (3000, 2))
    np.save(tmp_path / "ring_outlier.npy", np.vstack([ring, [[10.0, 10.0]]]).astype(np.float32))
    out = tmp_path / "run"
    args = [
        "prepare",
        "--params",
        str(PARAMS),
        "--out",
        str(out),
        "-S",
        "data.name=points",
        "-S",
        f"data.path={tmp_path / 'ring_outlier.npy'}",
    ]
    with pytest.warns(UserWarning, match=r"1 training row\(s\) of ring_outlier.npy .* lie outside every cluster"):
        assert main(args + ["-S", "tracking.enabled=false", "-S", "mixture.enabled=true"]) == 0
    modes = json.loads((out / "data" / "prepared" / "meta.json").read_text())["modes"]
    assert modes["count"] == 8 and modes["outliers"]["rows"] == 1
    assert modes["outliers"]["share"] == pytest.approx(1 / 2700, rel=0.2)  # one row of the ~2,700 training rows
    assert math.isclose(sum(modes["weights"]), 1.0)
    parts = json.loads((out / "data" / "prepared" / "mixture.json").read_text())["parts"]
    assert len(parts) == 8 and min(p["count"] for p in parts) > 300
    check_part_sizes(load_params(PARAMS), parts)  # raises on a part train would refuse


def test_a_cluster_too_small_to_train_joins_the_nearest_part():
    """Stray rows are the background's now, but a few rows close together are a cluster (three
    rows 0.01 apart), and with model.pack=2 a part needs a batch of 2 x 2 examples: the 3 rows,
    in training and test alike, join the nearest cluster's part, with a warning."""
    from gancore.partition import _fold_small_clusters

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [30.0, 30.0]])
    train_labels = torch.tensor([0] * 100 + [1] * 100 + [2] * 3)
    test_labels = torch.tensor([0] * 10 + [1] * 10 + [2])
    train = centres[train_labels] + 0.01 * torch.randn(len(train_labels), 2, generator=g)
    test = centres[test_labels] + 0.01 * torch.randn(len(test_labels), 2, generator=g)
    with pytest.warns(UserWarning, match=r"1 cluster\(s\) of fewer than 4 training examples .* joined the nearest part: 3 example"):
        folded_train, folded_test = _fold_small_clusters(train, test, train_labels, test_labels, 4)
    # (30, 30) is nearer (6, 0) than (0, 0)
    assert folded_train[-3:].tolist() == [1, 1, 1] and folded_test[-1] == 1
    assert torch.equal(folded_train[:-3], train_labels[:-3]) and torch.equal(folded_test[:-1], test_labels[:-1])


def test_the_column_count_reads_the_head_of_the_file_only(tmp_path):
    """Every validation of the parameters asks for the column count: it parsed the whole CSV (4 s
    for 38 MB, each time a process validated). It reads the sniffed head now; what is wrong far
    down is left to prepare, which names it."""
    from gancore.data.points import DIALECT_LINES, PointsError, load_points, point_dims

    rows = "\n".join("1.5,2.5,3.5" for _ in range(3 * DIALECT_LINES))
    (tmp_path / "p.csv").write_text("a,b,c\n\n" + rows + "\n1,2,oops\n")
    assert point_dims(tmp_path / "p.csv") == 3
    with pytest.raises(PointsError, match=rf"row {3 * DIALECT_LINES + 3}, column 'c': 'oops' is not a number"):
        load_points(tmp_path / "p.csv")
    # A byte that is not UTF-8 far down is not read at all by the count (the whole file was).
    (tmp_path / "q.csv").write_bytes(b"a,b\n" + b"1,2\n" * (3 * DIALECT_LINES) + b"1,\xff\n")
    assert point_dims(tmp_path / "q.csv") == 2
    with pytest.raises(PointsError, match=rf"is not UTF-8 text \(byte {4 + 4 * 3 * DIALECT_LINES + 2}:"):
        load_points(tmp_path / "q.csv")
    # the head and the whole file split lines by one rule (str.splitlines: NEL, form feed, ...)
    (tmp_path / "nel.csv").write_bytes(b"a,b\xc2\x851,2\n" + b"3,4\n" * 30)
    assert point_dims(tmp_path / "nel.csv") == len(load_points(tmp_path / "nel.csv")[1]) == 2


def test_tilted_clusters_are_two_modes_and_two_parts_through_the_pipeline(tmp_path):
    """Held out (built to fool a diagonal mixture): two long thin clusters at 45 degrees to the
    columns were 50 modes and 50 parts (the limit). Now prepare finds 2 with full covariances,
    which meta.json keeps, and every stage reads them: the mixture's two parts train, the domain
    classifier and the mode count use the full covariances."""
    import json

    from gancore.data.prepare import prepare_data
    from gancore.data.prepared import load_prepared
    from gancore.layout import Layout
    from gancore.stages import run_stage

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 3000)
    along, across = rng.normal(0, 1.0, 3000), rng.normal(0, 0.05, 3000) + (labels - 0.5) * 0.6
    x = np.stack([along - across, along + across], 1) / np.sqrt(2) * [3.0, 0.01] + [10.0, 0.0]
    np.save(tmp_path / "tilted.npy", x)
    sets = [f"data.path={tmp_path / 'tilted.npy'}", "data.name=points", "mixture.steps=40", "train.monitor_every=20"]
    params = load_params(PARAMS, [*sets, "device=cpu", "tracking.enabled=false", "train.checkpoint_every=1000"])
    layout = Layout(tmp_path / "run")
    prepare_data(params, layout)
    modes = load_prepared(layout.prepared).meta["modes"]
    assert modes["count"] == 2 and modes["selection"]["covariance"] == "full"
    assert np.array(modes["covariances"]).shape == (2, 2, 2)
    manifest = json.loads((layout.prepared / "mixture.json").read_text())
    assert len(manifest["parts"]) == 2 and all(p["matrix"] and "scale" not in p for p in manifest["parts"])
    part = load_prepared(layout.part(0).prepared)
    assert part.meta["part"]["matrix"]  # whitened: the cluster's axes at unit spread
    # the part's own points' extent, for its pictures: unit spread on each axis, about 1,350
    # points, so about +-3.5 (the data's box turned into the part's axes was +-73)
    lo, hi = part.meta["value_range"]
    assert lo <= float(part.train.min()) and float(part.train.max()) <= hi and hi - lo < 10
    for stage in ("train", "sample", "evaluate", "diagnose"):
        run_stage(stage, params, layout)
    # the samples are back in the data's coordinates: each part's back-map puts them along the
    # clusters' long axis (a wrong or transposed map would turn them off it)
    samples = torch.load(layout.samples_file, weights_only=True)["x"].double()
    real = load_prepared(layout.prepared).train.double()
    axis = lambda x: torch.linalg.eigh(torch.cov(x.T))[1][:, -1]  # noqa: E731
    assert abs(float(axis(samples) @ axis(real))) > 0.95  # 40 steps per part: where, not how well
    report = json.loads(layout.diagnose_json.read_text())
    assert report["modes_total"] == 2 and report["mode_protocol"].startswith("gaussian_2d (full covariances)")
