"""Diagnostics on constructed inputs whose answers are known analytically (no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from gancore.clustering import kmeans
from gancore.diagnostics import figures_from
from gancore.diagnostics.diversity import collapse_measures
from gancore.diagnostics.dynamics import EQUILIBRIUM_TOL, VALUE_TOL, analyse_dynamics, read_train_log
from gancore.diagnostics.modes import expected_coverage, modes_2d, modes_labelled, modes_stacked
from gancore.diagnostics.ndb import false_positive_bound, ndb, two_proportion_z
from gancore.diagnostics.remedies import NON_SATURATING, NORMALISATION, SEPARATE, WASSERSTEIN
from gancore.diagnostics.verdict import decide
from helpers import image_meta

# P(r < 3 sigma) for an isotropic 2D Gaussian: the radius is Rayleigh, 1 - exp(-9/2).
P_HQ = 1.0 - math.exp(-4.5)
N = 2500  # the 2D protocol's sample count


def ring8() -> tuple[torch.Tensor, float]:
    a = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    return torch.stack([a.cos(), a.sin()], 1), 0.01


def grid25() -> tuple[torch.Tensor, float]:
    ax = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    xs, ys = torch.meshgrid(ax, ax, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), 0.05


def mixture(centers: torch.Tensor, sigma: float, n: int, seed: int, modes=None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    modes = torch.as_tensor(modes if modes is not None else range(len(centers)))
    labels = modes[torch.randint(len(modes), (n,), generator=g)]
    return (centers[labels] + sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)).float(), labels


def binomial_tol(p: float, n: int, sds: float = 4.0) -> float:
    return sds * math.sqrt(p * (1 - p) / n)


def kl_bound(k: int, n: int) -> float:
    """99.9 % bound on KL(empirical || true) for n multinomial draws over k equal bins: 2n KL ~ chi2(k-1)."""
    return stats.chi2.ppf(0.999, k - 1) / (2 * n)


# -- training logs ------------------------------------------------------------------------------
def make_log(d_real, d_fake, grad_g, bn=None, loss_g=None) -> dict[str, np.ndarray]:
    d_real, d_fake, grad_g = (np.asarray(x, dtype=np.float64) for x in (d_real, d_fake, grad_g))
    n = len(d_real)
    value = np.log(d_real) + np.log1p(-d_fake)
    log = {
        "step": np.arange(1, n + 1, dtype=np.float64) * 10,
        "loss_d": -value,
        "loss_g": -np.log(d_fake) if loss_g is None else np.asarray(loss_g, dtype=np.float64),
        "d_real": d_real,
        "d_fake": d_fake,
        "logit_real": np.log(d_real / (1 - d_real)),
        "logit_fake": np.log(d_fake / (1 - d_fake)),
        "value": value,
        "grad_norm_g": grad_g,
        "grad_norm_d": grad_g,
        "bn_drift_g": np.full(n, np.nan) if bn is None else np.asarray(bn, dtype=np.float64),
        "seconds": np.arange(n, dtype=np.float64),
    }
    return log


def healthy_log(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return make_log(
        0.5 + 0.02 * rng.standard_normal(n),
        0.5 + 0.02 * rng.standard_normal(n),
        1.0 + 0.1 * rng.standard_normal(n),
        bn=0.2 * np.exp(-np.arange(n) / 30) + 0.01,
    )


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


def diagnosis_2d(gen, centers, sigma, real_train, real_test, real_labels=None, log=None, loss="non_saturating", bins=100):
    report = modes_2d(gen, centers, sigma, real_labels=real_labels)
    figures = figures_from(report, collapse_measures(gen, real_test, 0.05, seed=0), ndb(real_train, gen, bins, 0.05, seed=0))
    dynamics = analyse_dynamics(log, loss) if log is not None else None
    return report, figures, decide(figures, dynamics, loss)


@pytest.fixture(scope="module")
def ring_data():
    centers, sigma = ring8()
    train, _ = mixture(centers, sigma, 10_000, seed=1)
    test, test_labels = mixture(centers, sigma, 2_000, seed=2)
    return centers, sigma, train, test, test_labels


# -- 2D protocol --------------------------------------------------------------------------------
def test_perfect_ring_is_healthy(ring_data):
    centers, sigma, train, test, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=3)
    report, figures, decision = diagnosis_2d(gen, centers, sigma, train, test, log=healthy_log())
    assert report["modes_covered"] == report["modes_total"] == 8
    assert report["high_quality_fraction"] == pytest.approx(P_HQ, abs=binomial_tol(P_HQ, N))
    # Against PacGAN's uniform reference histogram (no labels passed).
    assert 0.0 <= report["mode_kl"] <= kl_bound(8, report["n_counted"])
    assert report["n_counted"] == round(report["high_quality_fraction"] * N)
    assert sum(report["generated_counts"]) == report["n_counted"]  # histogram of high-quality points only
    assert figures["pairwise_distance_ratio"] == pytest.approx(1.0, abs=0.05)
    # Calibrated on real nearest-neighbour distances at equal n: a faithful generator sits at the
    # quantile (5 %), tight modes or not; sd of a mutual-neighbour proportion at n = 2000: ~0.007.
    assert figures["duplicate_rate"] == pytest.approx(0.05, abs=0.03) and abs(figures["duplicate_excess"]) < 0.03
    assert decision["verdict"] == "healthy", decision["explanation"]
    assert decision["remedies"] == []


def test_quality_radius_is_strict_three_sigma():
    centers, sigma = ring8()
    c0 = centers[0]
    pts = torch.stack(
        [c0 + torch.tensor([2.999 * sigma, 0.0], dtype=torch.float64), c0 + torch.tensor([0.0, 3.001 * sigma], dtype=torch.float64)]
    )
    r = modes_2d(pts, centers, sigma)
    assert r["generated_counts"][0] == 1 and r["high_quality_fraction"] == 0.5


def test_ring_collapsed_to_one_mode(ring_data):
    centers, sigma, train, test, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=4, modes=[3])
    report, figures, decision = diagnosis_2d(gen, centers, sigma, train, test)
    assert report["modes_covered"] == 1
    # One mode against uniform over 8: KL = log 8 exactly.
    assert report["mode_kl"] == pytest.approx(math.log(8), abs=1e-12)
    # Spread of one Gaussian (mean distance sigma * sqrt(pi)) over the ring's 1.257.
    assert figures["pairwise_distance_ratio"] < 0.02
    assert decision["verdict"] == "complete_collapse"
    # A single GAN: a mixture of GANs first, then packing (with its measured caveat), then more data.
    assert [r["name"] for r in decision["remedy_settings"]] == ["mixture", "pack2", "pack4", "augment"]
    assert decision["remedies"][0].startswith(SEPARATE)
    assert decision["evidence"]["modes_covered"] == 1


def test_ring_half_the_modes(ring_data):
    centers, sigma, train, test, test_labels = ring_data
    gen, _ = mixture(centers, sigma, N, seed=5, modes=[0, 2, 4, 6])
    report, figures, decision = diagnosis_2d(gen, centers, sigma, train, test, real_labels=test_labels, log=healthy_log())
    assert report["modes_covered"] == 4
    # Uniform over 4 of 8 modes against the empirical real histogram q: KL = sum_S 1/4 log(1/4 / q_i)
    # (log 2 for exact q), plus the generated side's sampling noise.
    q = np.bincount(test_labels.numpy(), minlength=8) / len(test_labels)
    target = float(np.sum(0.25 * np.log(0.25 / q[[0, 2, 4, 6]])))
    assert abs(target - math.log(2)) < 0.1
    assert report["mode_kl"] == pytest.approx(target, abs=kl_bound(4, report["n_counted"]) + 2e-3)
    assert report["real_histogram_source"].startswith("prepared test labels")
    assert decision["verdict"] == "partial_collapse"
    assert decision["evidence"]["modes_covered"] == 4
    # Half of the modes missing is also a large NDB (reported, not the deciding figure here).
    assert figures["ndb"] > false_positive_bound(100, 0.05)


def test_uniform_noise_is_low_quality_and_not_healthy(ring_data):
    centers, sigma, train, test, _ = ring_data
    g = torch.Generator().manual_seed(6)
    gen = torch.rand(N, 2, generator=g) * 3.0 - 1.5
    report, figures, decision = diagnosis_2d(gen, centers, sigma, train, test, log=healthy_log())
    # 8 discs of radius 3 sigma (disjoint, inside the box) over the box's area 9.
    p = 8 * math.pi * (3 * sigma) ** 2 / 9.0
    assert report["high_quality_fraction"] == pytest.approx(p, abs=binomial_tol(p, N))
    assert decision["verdict"] == "not_converged"
    assert decision["evidence"]["high_quality_fraction"] < 0.05


def test_grid25_analogues():
    centers, sigma = grid25()
    train, _ = mixture(centers, sigma, 5_000, seed=11)
    test, _ = mixture(centers, sigma, 2_000, seed=12)
    gen, _ = mixture(centers, sigma, N, seed=13)
    report, _, decision = diagnosis_2d(gen, centers, sigma, train, test, log=healthy_log(), bins=25)
    assert report["modes_covered"] == 25
    assert report["high_quality_fraction"] == pytest.approx(P_HQ, abs=binomial_tol(P_HQ, N))
    assert report["mode_kl"] <= kl_bound(25, report["n_counted"])
    assert decision["verdict"] == "healthy", decision["explanation"]

    few, _ = mixture(centers, sigma, N, seed=14, modes=range(0, 25, 2))  # 13 modes
    report, _, decision = diagnosis_2d(few, centers, sigma, train, test, bins=25)
    assert report["modes_covered"] == 13 and decision["verdict"] == "partial_collapse"

    one, _ = mixture(centers, sigma, N, seed=15, modes=[12])
    report, _, decision = diagnosis_2d(one, centers, sigma, train, test, bins=25)
    assert report["modes_covered"] == 1 and decision["verdict"] == "complete_collapse"

    noise = torch.rand(N, 2, generator=torch.Generator().manual_seed(16)) * 10 - 5
    report, _, decision = diagnosis_2d(noise, centers, sigma, train, test, bins=25)
    p = 25 * math.pi * (3 * sigma) ** 2 / 100.0
    assert report["high_quality_fraction"] == pytest.approx(p, abs=binomial_tol(p, N))
    assert decision["verdict"] == "not_converged"


def test_expected_coverage_matches_simulation():
    rng = np.random.default_rng(0)
    for k, n in ((8, 20), (1000, 1000)):
        p = np.full(k, 1.0 / k)
        mean, sd = expected_coverage(p, n)
        sims = np.array([np.count_nonzero(rng.multinomial(n, p)) for _ in range(4000)])
        assert mean == pytest.approx(sims.mean(), abs=4 * sims.std() / math.sqrt(len(sims)))
        assert sd == pytest.approx(sims.std(), rel=0.1)
    assert expected_coverage(np.full(8, 1 / 8), 2500)[0] == pytest.approx(8.0, abs=1e-12)


# -- complete-collapse measures -------------------------------------------------------------------
def test_collapse_measures_on_identical_points(ring_data):
    _, _, _, test, _ = ring_data
    same = torch.zeros(500, 2)
    m = collapse_measures(same, test, 0.05)
    assert m["pairwise_distance_ratio"] == 0.0
    assert m["duplicate_rate"] == 1.0
    assert m["pairwise_points"] == 500


def test_collapse_measures_in_feature_space():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(3000, 64, generator=g)
    fake = torch.randn(1500, 64, generator=g)
    m = collapse_measures(fake, real, 0.05)
    # Two samples of one Gaussian: equal mean distances within a percent, and the near-duplicate
    # rate at its chance level, the calibration quantile (sd ~0.008 at n = 1500).
    assert m["pairwise_distance_ratio"] == pytest.approx(1.0, abs=0.01)
    assert m["duplicate_rate"] == pytest.approx(0.05, abs=0.03) and m["real_duplicate_rate"] == pytest.approx(0.05, abs=0.03)
    copies = real[:10].repeat(150, 1) + 1e-3 * torch.randn(1500, 64, generator=g)
    m = collapse_measures(copies, real, 0.05)
    assert m["duplicate_rate"] == 1.0
    # Ten distinct samples, far apart: nearly all the same inside each, not one point overall.
    assert decide({**m, "ndb_significant": False})["verdict"] == "intra_mode_collapse"


# -- NDB ------------------------------------------------------------------------------------------
def test_two_proportion_z_matches_formula():
    z, p = two_proportion_z(torch.tensor([0.5, 0.0], dtype=torch.float64), 100, torch.tensor([0.4, 0.0], dtype=torch.float64), 100)
    pooled = 0.45
    expect = 0.1 / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert float(z[0]) == pytest.approx(expect, rel=1e-12)
    assert float(p[0]) == pytest.approx(2 * stats.norm.cdf(-expect), rel=1e-10)
    assert float(p[1]) == 1.0  # both empty: not different


def test_kmeans_finds_separated_blobs(ring_data):
    centers, sigma, train, _, labels = ring_data
    c, lab = kmeans(train[:4000], 8, seed=0)
    d = torch.cdist(c.double(), centers).min(dim=1).values
    assert d.max() < 5 * sigma / math.sqrt(4000 / 8) + 1e-3
    assert len(torch.unique(lab)) == 8


def test_ndb_same_distribution_is_small(ring_data):
    centers, sigma, train, _, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=21)
    r = ndb(train, gen, 100, 0.05, seed=0)
    assert r["ndb"] <= false_positive_bound(100, 0.05)
    assert r["ndb_significant"] is False
    assert r["ndb_k"] == r["ndb"] / 100
    # JS of two histograms of one distribution: about (K - 1)(1/n1 + 1/n2) / 8.
    assert 0 <= r["ndb_js"] < 3 * 99 * (1 / 10_000 + 1 / N) / 8


def test_ndb_missing_region_is_large(ring_data):
    centers, sigma, train, _, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=22, modes=range(1, 8))
    r = ndb(train, gen, 100, 0.05, seed=0)
    near_missing = torch.cdist(r["centers"].double(), centers[:1]).squeeze(1) < 5 * sigma
    assert near_missing.sum() >= 5
    # Every bin of the dropped mode is empty on the generated side and significantly different.
    assert all(r["different"][i] for i in torch.nonzero(near_missing).flatten().tolist())
    assert r["ndb"] >= int(near_missing.sum()) and r["ndb_significant"] is True
    assert r["ndb_js"] > 0.03


def test_ndb_decides_partial_collapse_only_without_known_modes(ring_data):
    centers, sigma, train, test, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=23, modes=range(1, 8))
    nd = ndb(train, gen, 50, 0.05, seed=0)
    figures = figures_from(None, collapse_measures(gen, test, 0.05), nd)
    decision = decide(figures)
    assert decision["verdict"] == "partial_collapse"
    assert decision["evidence"]["ndb"] == nd["ndb"]


# -- stacked MNIST and labelled images -------------------------------------------------------------
def one_hot(idx, k):
    return torch.nn.functional.one_hot(torch.as_tensor(idx), k).double()


def test_stacked_all_triples_once():
    r = modes_stacked(one_hot(torch.arange(1000), 1000), confidence=0.9)
    assert r["modes_covered"] == 1000 and r["modes_total"] == 1000
    assert r["mode_kl"] == pytest.approx(0.0, abs=1e-12)
    assert r["high_quality_fraction"] == 1.0


def test_stacked_ten_triples():
    triples = torch.tensor([7, 42, 123, 256, 399, 500, 618, 777, 808, 999]).repeat(100)
    r = modes_stacked(one_hot(triples, 1000), confidence=0.9)
    assert r["modes_covered"] == 10
    # Ten equally used triples against 1/1000 each: sum 0.1 log(0.1 / 0.001) = log 100.
    assert r["mode_kl"] == pytest.approx(math.log(100), rel=1e-12)
    assert r["generated_counts"][123] == 100


def test_stacked_channel_confidence_from_outer_product():
    def channel(digit, conf):
        p = torch.full((10,), (1 - conf) / 9, dtype=torch.float64)
        p[digit] = conf
        return p

    confident = torch.einsum("i,j,k->ijk", channel(1, 0.95), channel(2, 0.99), channel(3, 0.92)).reshape(1000)
    unsure = torch.einsum("i,j,k->ijk", channel(1, 0.95), channel(2, 0.85), channel(3, 0.99)).reshape(1000)
    probs = torch.stack([confident] * 30 + [unsure] * 10)
    r = modes_stacked(probs, confidence=0.9)
    assert r["high_quality_fraction"] == pytest.approx(0.75)
    assert r["modes_covered"] == 1 and r["generated_counts"][123] == 40


def test_labelled_images():
    labels = torch.arange(10).repeat(100)
    probs = 0.95 * one_hot(labels, 10) + 0.05 / 10
    probs[labels == 9] = 0.5 * one_hot(torch.full((100,), 9), 10)[0] + 0.5 / 10
    real = torch.arange(10).repeat(50)
    r = modes_labelled(probs, real, confidence=0.9, label_names=[f"c{i}" for i in range(10)])
    assert r["modes_total"] == 10
    assert r["modes_covered"] == 9  # class 9 only has unconfident samples
    assert r["high_quality_fraction"] == pytest.approx(0.9)
    assert r["mode_kl"] == pytest.approx(0.0, abs=1e-12)
    assert r["mode_labels"][9] == "c9"
    # Against a skewed real histogram: KL(uniform || q) = sum 0.1 log(0.1 / q).
    skew = torch.cat([torch.zeros(200, dtype=torch.long), torch.arange(1, 10).repeat(20)])
    q = np.bincount(skew.numpy(), minlength=10) / len(skew)
    r = modes_labelled(probs, skew, confidence=0.9)
    assert r["mode_kl"] == pytest.approx(float(np.sum(0.1 * np.log(0.1 / q))), rel=1e-10)


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
    q = np.bincount(test_labels.numpy(), minlength=8) / len(test_labels)
    kl_target = float(np.sum(np.log((1 / 6) / q[:6])) / 6)
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
        ["augment.policy=jitter", "augment.adaptive=true"],  # "more diverse data", as settings
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
