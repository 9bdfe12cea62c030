"""Training dynamics read from constructed logs, and the `gan diagnose` stage on constructed data and
samples, whose answers are known analytically (no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from constructed_inputs import P_HQ, N, binomial_tol, diagnosis_2d, healthy_log, kl_bound, make_log, mixture, ring8
from gancore.diagnostics.dynamics import EQUILIBRIUM_TOL, VALUE_TOL, analyse_dynamics, read_train_log
from gancore.diagnostics.ndb import false_positive_bound
from gancore.diagnostics.remedies import NON_SATURATING, NORMALISATION, SEPARATE, WASSERSTEIN
from gancore.diagnostics.verdict import decide
from helpers import image_meta


# -- training logs ------------------------------------------------------------------------------
def vanishing_log(n: int = 200) -> dict[str, np.ndarray]:
    t = np.arange(n) / n
    return make_log(1 - 0.5 * np.exp(-5 * t), 0.5 * np.exp(-6 * t), np.exp(-6 * t))


def write_log(path: Path, log: dict[str, np.ndarray]) -> None:
    cols = list(log)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(len(log["step"])):
            w.writerow(["" if not np.isfinite(log[c][i]) else repr(float(log[c][i])) for c in cols])


# -- training dynamics ---------------------------------------------------------------------------
def test_vanishing_gradients_log(ring_data):
    d = analyse_dynamics(vanishing_log(), "minimax")
    v = d["vanishing_gradients"]
    assert v["flag"] is True and v["grad_ratio"] < 0.1 and v["d_fake_late"] < 0.1
    assert d["dominance"]["flag"] is True
    assert d["equilibrium"]["flag"] is False and d["equilibrium"]["far_flag"] is True
    centers, sigma, train, test, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=31)
    _, _, decision = diagnosis_2d(gen, centers, sigma, train, test, log=vanishing_log(), loss="minimax")
    assert decision["verdict"] == "vanishing_gradients"
    # The saturating loss is the named cause: its cure first, then the Wasserstein loss.
    assert [r["name"] for r in decision["remedy_settings"][:2]] == ["non_saturating", "wasserstein_gp"]
    assert decision["remedies"][0].startswith(NON_SATURATING) and decision["remedies"][1].startswith(WASSERSTEIN)
    assert decision["evidence"]["grad_ratio"] < 0.1


def test_equilibrium_log():
    n = 300
    t = np.arange(n)
    rng = np.random.default_rng(1)
    d_real = 0.5 + 0.04 * np.sin(t / 7) + 0.01 * rng.standard_normal(n)
    d_fake = 0.5 - 0.04 * np.sin(t / 7) + 0.01 * rng.standard_normal(n)
    d = analyse_dynamics(make_log(d_real, d_fake, np.ones(n)), "minimax")
    eq = d["equilibrium"]
    assert eq["flag"] is True
    assert abs(eq["value_mean"] + math.log(4)) < VALUE_TOL
    assert abs(eq["d_real_mean"] - 0.5) < EQUILIBRIUM_TOL and abs(eq["d_fake_mean"] - 0.5) < EQUILIBRIUM_TOL
    assert d["oscillation"]["flag"] is False  # 0.04 swings: below the oscillation amplitude
    assert d["vanishing_gradients"]["flag"] is False

    # D winning (0.8 / 0.2) is outside the tolerance; V = 2 log 0.8 is 0.94 above -log 4.
    d = analyse_dynamics(make_log(np.full(n, 0.8), np.full(n, 0.2), np.ones(n)), "minimax")
    assert d["equilibrium"]["flag"] is False and d["equilibrium"]["far_flag"] is False
    # A loss with no sigmoid equilibrium: numbers, no flag.
    d = analyse_dynamics(make_log(d_real, d_fake, np.ones(n)), "wasserstein_gp")
    assert d["equilibrium"]["flag"] is None and d["equilibrium"]["d_real_mean"] == pytest.approx(0.5, abs=0.02)


def test_oscillation_and_bn_drift():
    n = 300
    t = np.arange(n)
    d = analyse_dynamics(make_log(0.5 + 0.3 * np.sin(t / 3), 0.5 - 0.3 * np.sin(t / 3), np.ones(n)), "non_saturating")
    osc = d["oscillation"]
    # A sine of amplitude 0.3 has std 0.3 / sqrt 2; 60 late rows at period 2 pi 3 cross zero ~6 times.
    assert osc["flag"] is True and osc["detrended_std"] == pytest.approx(0.3 / math.sqrt(2), rel=0.1)
    assert osc["sign_changes"] >= 4
    decision = decide(
        {
            "high_quality_fraction": 0.99,
            "modes_total": 8,
            "modes_covered": 8,
            "modes_expected": 8.0,
            "pairwise_distance_ratio": 1.0,
            "duplicate_excess": 0.0,
        },
        d,
        "non_saturating",
    )
    assert decision["verdict"] == "not_converged" and any(r.startswith(NORMALISATION) for r in decision["remedies"])

    assert healthy_log()["bn_drift_g"][0] > 0
    bn = analyse_dynamics(healthy_log(), "non_saturating")["bn_drift"]
    assert bn["flag"] is False and bn["late_to_early"] < 0.5
    steady = analyse_dynamics(make_log(np.full(n, 0.5), np.full(n, 0.5), np.ones(n), bn=np.full(n, 0.2)), "minimax")
    assert steady["bn_drift"]["flag"] is True and steady["bn_drift"]["late_to_early"] == pytest.approx(1.0)
    assert analyse_dynamics(make_log(np.full(n, 0.5), np.full(n, 0.5), np.ones(n)), "minimax")["bn_drift"] is None


def test_read_train_log_roundtrip(tmp_path):
    log = vanishing_log(50)
    path = tmp_path / "train_log.csv"
    write_log(path, log)
    back = read_train_log(path)
    assert set(back) == set(log)
    np.testing.assert_allclose(back["grad_norm_g"], log["grad_norm_g"])
    assert np.isnan(back["bn_drift_g"]).all()
    assert read_train_log(tmp_path / "absent.csv") is None
    (tmp_path / "bad.csv").write_text("step,loss_d\n1,0.5\n")
    with pytest.raises(Exception, match="lacks column"):
        read_train_log(tmp_path / "bad.csv")


# -- the stage -----------------------------------------------------------------------------------
REQUIRED_KEYS = (
    "modes_total",
    "modes_covered",
    "high_quality_fraction",
    "mode_kl",
    "ndb",
    "ndb_k",
    "ndb_js",
    "pairwise_distance_ratio",
    "duplicate_rate",
    "verdict",
    "evidence",
    "explanation",
    "remedies",
    "dynamics",
)


def _no_nan(obj) -> bool:
    if isinstance(obj, dict):
        return all(_no_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_nan(v) for v in obj)
    return not (isinstance(obj, float) and not math.isfinite(obj))


def test_stage_ring8(tmp_path):
    from gancore.config import Params
    from gancore.data.prepared import PreparedData, save_prepared
    from gancore.diagnostics import diagnose
    from gancore.layout import Layout

    layout = Layout(tmp_path)
    centers, sigma = ring8()
    train, train_labels = mixture(centers, sigma, 4000, seed=41)
    test, test_labels = mixture(centers, sigma, 2000, seed=42)
    meta = {
        "name": "ring8",
        "kind": "vector",
        "shape": [2],
        "count": 4000,
        "count_test": 2000,
        "value_range": [-1.04, 1.04],
        "storage": "float32",
        "seed": 0,
        "modes": {"count": 8, "definition": "ring", "centers": centers.tolist(), "sigma": sigma},
        "raw_sha256": {},
    }
    save_prepared(layout.prepared, PreparedData(meta, train, test, train_labels, test_labels))
    gen, _ = mixture(centers, sigma, N, seed=43, modes=[0, 1, 2, 3, 4, 5])
    layout.samples.mkdir(parents=True)
    torch.save({"x": gen, "seed": 1, "latent_dim": 16}, layout.samples / "samples.pt")
    layout.metrics.mkdir(parents=True)
    write_log(layout.train_log, healthy_log())

    params = Params(data={"name": "ring8"}, device="cpu", diagnose={"ndb_bins": 50})
    summary = diagnose(params, layout)
    # Uniform over 6 of ring8's 8 equal-weight modes against uniform over all 8 (PacGAN's reference).
    kl_target = math.log(8 / 6)
    assert summary == {
        "verdict": "partial_collapse",
        "modes_covered": 6,
        "modes_total": 8,
        "high_quality_fraction": pytest.approx(P_HQ, abs=binomial_tol(P_HQ, N)),
        "mode_kl": pytest.approx(kl_target, abs=kl_bound(6, 2400) + 2e-3),
        "ndb": summary["ndb"],
    }
    out = json.loads((layout.metrics / "diagnose.json").read_text())
    assert all(k in out for k in REQUIRED_KEYS)
    assert _no_nan(out)
    assert out["dynamics"]["equilibrium"]["flag"] is True
    # The remedies, each with the settings that apply it to this run: a single GAN, so the mixture
    # first (parts found from the data: no part count to give), then packing, then more data.
    assert [r["name"] for r in out["remedy_settings"]] == ["mixture", "pack2", "pack4", "augment"]
    assert [r["sets"] for r in out["remedy_settings"]] == [
        ["mixture.enabled=true"],
        ["model.pack=2"],
        ["model.pack=4"],
        ["augment.policy=jitter", "augment.adaptive=true"],  # "more diverse data", as settings (ADA's r_t: D does not memorise)
    ]
    assert out["remedies"][0] == f"{SEPARATE} (set: -S mixture.enabled=true)"
    assert out["remedies"][1].startswith("packing with 2 samples (PacGAN2)") and "(set: -S model.pack=2)" in out["remedies"][1]
    assert out["ndb"] > false_positive_bound(50, 0.05)
    rows = list(csv.DictReader((layout.metrics / "mode_histogram.csv").open()))
    assert [r["mode"] for r in rows] == [str(i) for i in range(8)]
    assert float(rows[7]["generated"]) == 0.0 and float(rows[7]["real"]) > 0.1
    assert sum(float(r["generated"]) for r in rows) == pytest.approx(1.0, abs=1e-5)
    for pic in ("mode_histogram.png", "dynamics.png", "ndb.png"):
        assert (layout.plots / pic).stat().st_size > 1000
    md = (layout.metrics / "diagnosis.md").read_text()
    assert md.startswith("# Diagnosis: partial_collapse") and "6 / 8" in md
    assert not list(tmp_path.rglob("*.tmp"))


def test_stage_images_without_classifier(tmp_path):
    """Unlabelled images without a domain classifier: modes null, distances on pixels, no NaN."""
    from gancore.config import Params
    from gancore.data.prepared import PreparedData, save_prepared
    from gancore.diagnostics import diagnose
    from gancore.errors import ParamsError
    from gancore.layout import Layout

    layout = Layout(tmp_path)
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8, generator=g)
    test = torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8, generator=g)
    meta = image_meta("image_folder", [3, 8, 8], 300, 100, {"count": None, "definition": "unlabelled"})
    save_prepared(layout.prepared, PreparedData(meta, train, test))
    layout.samples.mkdir(parents=True)
    # Every sample the same image: complete collapse, seen in pixel space.
    same = train[:1].repeat(200, 1, 1, 1)
    torch.save({"x": same, "seed": 1, "latent_dim": 8}, layout.samples / "samples.pt")
    # More NDB bins than training examples: a parameter error (exit 2 from the CLI), nothing written.
    too_many = Params(data={"name": "image_folder", "path": "x", "image_size": 8}, device="cpu", diagnose={"ndb_bins": 301})
    with pytest.raises(ParamsError, match="diagnose.ndb_bins: 301 exceeds the 300 prepared training examples; use at most 300 bins"):
        diagnose(too_many, layout)
    assert not layout.metrics.exists()
    params = Params(data={"name": "image_folder", "path": "x", "image_size": 8}, device="cpu", diagnose={"ndb_bins": 10})
    summary = diagnose(params, layout)
    out = json.loads((layout.metrics / "diagnose.json").read_text())
    assert summary["verdict"] == "complete_collapse"
    assert out["modes_total"] is None and out["mode_kl"] is None and out["high_quality_fraction"] is None
    assert out["pairwise_distance_ratio"] == 0.0 and out["duplicate_rate"] == 1.0
    assert out["distance_space"].startswith("pixels")
    assert out["dynamics"] is None and _no_nan(out)
    assert (layout.metrics / "mode_histogram.csv").read_text().strip() == "mode,generated,real"
    # No training log: the dynamics picture says so (no stale one from an earlier run survives).
    assert (layout.plots / "dynamics.png").read_bytes().startswith(b"\x89PNG")


def test_an_image_folder_of_1000_classes_is_labelled_images_not_stacked_mnist(tmp_path):
    """Held-out trap: Stacked MNIST has 1000 modes, and so does an ImageNet-style folder of 1000
    class subfolders. The stacked protocol (per-channel digit marginals) follows from the stacked
    classifier, never from the count: this folder is counted as 1000 labelled classes."""
    from gancore.classifiers.domain_networks import FORMAT, GREY_ARCH, build_network
    from gancore.config import Params
    from gancore.data.prepared import PreparedData, save_prepared
    from gancore.diagnostics import diagnose
    from gancore.layout import Layout

    layout = Layout(tmp_path)
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (2000, 3, 16, 16), dtype=torch.uint8, generator=g)
    test = torch.randint(0, 256, (1000, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.arange(2000) % 1000
    arch = dict(GREY_ARCH, in_channels=3, num_classes=1000)
    torch.manual_seed(0)
    ckpt = {"format": FORMAT, "kind": "cnn", "state_dict": build_network(arch).state_dict(), "arch": arch}
    ckpt.update(num_classes=1000, in_channels=3, image_size=16)
    modes = {"count": 1000, "definition": "the 1000 class folders", "labels": [f"c{i:03d}" for i in range(1000)]}
    meta = image_meta("image_folder", [3, 16, 16], 2000, 1000, modes, classifier={"kind": "cnn", "file": "classifier.pt"})
    save_prepared(layout.prepared, PreparedData(meta, train, test, labels, labels[:1000]))
    torch.save(ckpt, layout.prepared / "classifier.pt")
    layout.samples.mkdir(parents=True)
    torch.save({"x": test[:400].float() / 127.5 - 1, "seed": 1, "latent_dim": 8}, layout.samples / "samples.pt")
    params = Params(data={"name": "image_folder", "path": "x", "image_size": 16}, device="cpu", diagnose={"ndb_bins": 10})
    diagnose(params, layout)
    out = json.loads((layout.metrics / "diagnose.json").read_text())
    assert out["modes_total"] == 1000 and not out["mode_protocol"].startswith("pacgan_stacked_mnist")
    assert "classifier max probability" in out["high_quality_definition"]


def test_stage_on_flat_rows_beside_clusters_names_the_rows_left_out(tmp_path):
    """A points file of two clusters beside 30 % flat rows, and a generator of the clusters
    alone: the stage's verdict, text, diagnose.json and diagnosis.md say what was left out (it
    was healthy: 2 of 2 modes at 99 % high quality). Then two generators with the flat rows'
    share, squeezed into the box's middle and drawn as blobs over it, each healthy before the
    regions outside and the near duplicates among the samples there. The collapse monitor judges
    the same samples alike (it tested the share outside alone: the two were healthy to it)."""
    from gancore.config import Params
    from gancore.data import load_prepared
    from gancore.data.prepare import prepare_data
    from gancore.diagnostics import diagnose
    from gancore.layout import Layout
    from gancore.training.monitor import CollapseMonitor

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random((1800, 2)) * 30 - 5, rng.normal(size=(2100, 2)) * 0.3, rng.normal(size=(2100, 2)) * 0.3 + (0, 20)])
    np.save(tmp_path / "points.npy", x)
    layout = Layout(tmp_path / "run")
    params = Params(data={"name": "points", "path": str(tmp_path / "points.npy")}, device="cpu", diagnose={"ndb_bins": 50})
    prepare_data(params, layout)
    data = load_prepared(layout.prepared)
    clusters = np.concatenate([rng.normal(size=(1250, 2)) * 0.3, rng.normal(size=(1250, 2)) * 0.3 + (0, 20)])
    units = data.meta["units"]
    z = (torch.from_numpy(clusters) - torch.tensor(units["mean"])) / torch.tensor(units["std"])
    layout.samples.mkdir(parents=True)
    torch.save({"x": z.float(), "seed": 1, "latent_dim": 16}, layout.samples / "samples.pt")
    layout.metrics.mkdir(parents=True)
    write_log(layout.train_log, healthy_log())
    d = params.diagnose
    monitor = CollapseMonitor(
        data, layout.prepared, 16, params.seed, torch.device("cpu"), d.confidence, d.duplicate_fraction, ndb_bins=d.ndb_bins
    )
    outside = ("outside_short", "outside_cells", "outside_cells_short", "outside_cells_short_share", "outside_duplicate_rate")

    def watched(diagnosed: dict) -> None:
        figures = monitor.score(torch.load(layout.samples / "samples.pt")["x"])
        assert monitor.judge(figures) == diagnosed["verdict"]
        assert {k: figures.get(k) for k in outside} == {k: diagnosed.get(k) for k in outside}

    summary = diagnose(params, layout)
    assert (summary["verdict"], summary["modes_covered"], summary["modes_total"]) == ("partial_collapse", 2, 2)
    out = json.loads((layout.metrics / "diagnose.json").read_text())
    real = data.meta["modes"]["outliers"]["row_share"]
    assert out["outside_share"] < 0.01 and out["outside_share_real"] == pytest.approx(real) and 0.25 < real < 0.35
    assert (
        f"short of the rows outside every cluster ({out['outside_share']:.1%} of samples, {real:.1%} of training rows)"
        in out["explanation"]
    )
    md = (layout.metrics / "diagnosis.md").read_text()
    assert md.startswith("# Diagnosis: partial_collapse") and "| samples outside every cluster (training rows) |" in md
    assert "| cells outside every cluster short of samples | " in md
    assert out["outside_short"] is True and out["modes_short"] == 0
    watched(out)

    # the flat rows' share again, squeezed into the box's central 6 x 6: the share outside is
    # the data's (healthy, before the cells), the regions around are empty
    flat = rng.random((750, 2)) * 6 + 7
    z = (torch.from_numpy(np.concatenate([clusters[:1750], flat])) - torch.tensor(units["mean"])) / torch.tensor(units["std"])
    torch.save({"x": z.float(), "seed": 1, "latent_dim": 16}, layout.samples / "samples.pt")
    assert diagnose(params, layout)["verdict"] == "partial_collapse"
    out = json.loads((layout.metrics / "diagnose.json").read_text())
    assert out["modes_short"] == 0 and out["outside_share"] == pytest.approx(real, abs=0.05)
    # 50 NDB bins: 50 times the share outside of half the training rows (about 15 cells)
    assert 10 <= out["outside_cells"] <= 20 and out["outside_cells_short"] >= out["outside_cells"] // 2
    assert out["evidence"]["outside_cells_short"] == out["outside_cells_short"]
    assert (
        f"; {out['outside_cells_short']} of the {out['outside_cells']} regions the rows outside every cluster are cut into ("
        in out["explanation"]
    )
    watched(out)

    # and drawn as tight blobs at 100 places over the box: every region's share right, and 2 %
    # near duplicates over all samples, the data's own rate (their tight clusters set the scale);
    # among the samples outside every cluster, most have a near duplicate
    places = torch.from_numpy(rng.random((100, 2)) * 30 - 5)
    flat = places[torch.arange(750) % 100] + torch.from_numpy(rng.normal(size=(750, 2)) * 0.1)
    z = (torch.cat([torch.from_numpy(clusters[:1750]), flat]) - torch.tensor(units["mean"])) / torch.tensor(units["std"])
    torch.save({"x": z.float(), "seed": 1, "latent_dim": 16}, layout.samples / "samples.pt")
    assert diagnose(params, layout)["verdict"] == "intra_mode_collapse"
    out = json.loads((layout.metrics / "diagnose.json").read_text())
    assert out["outside_cells_short"] == 0 and out["duplicate_rate"] < 2 * out["duplicate_quantile"]
    assert out["outside_duplicate_rate"] > 0.5 and out["outside_real_duplicate_rate"] < 0.15
    assert f"{out['outside_duplicate_rate']:.1%} of the samples outside every cluster have a near duplicate" in out["explanation"]
    md = (layout.metrics / "diagnosis.md").read_text()
    assert "| near-duplicate rate outside every cluster (training rows there, same n) | " in md
    watched(out)
