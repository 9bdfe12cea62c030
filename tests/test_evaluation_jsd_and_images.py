"""The `gan evaluate` stage beyond ring8: the discriminator's JSD lower bound on laws whose JSD is
known (0 or log 2), and images: a tiny MNIST through `gan prepare`'s data code and domain classifier,
and unlabelled images scored by a stand-in for the Inception classifier (its weights need a download).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from gancore.config import Params
from gancore.data.prepared import PreparedData, save_prepared
from gancore.evaluation import evaluate
from gancore.evaluation_jsd import js_lower_bound
from gancore.layout import Layout
from helpers import EVALUATE_KEYS as KEYS
from helpers import image_meta

LOG2 = math.log(2)


def write_samples(layout: Layout, x: torch.Tensor) -> None:
    layout.samples.mkdir(parents=True, exist_ok=True)
    torch.save({"x": x, "seed": 0, "latent_dim": 16}, layout.samples / "samples.pt")


def read_result(layout: Layout) -> dict:
    text = layout.evaluate_json.read_text()
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c} in evaluate.json"))


# -- the discriminator's JSD lower bound -----------------------------------------------------------


def test_js_lower_bound_identical_distributions_near_zero():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    est = js_lower_bound(a, b, seed=0)
    # JSD = 0: every D has V(D) <= -log 4 in expectation, so the bound is 0 up to the held-out
    # estimate's noise, which se measures (D ~ 1/2 gives log D ~ -log 2 +- a little).
    assert est.js_lower_bound <= 4 * est.se + 1e-9
    assert est.js_lower_bound < 0.01
    assert est.v_hat < -math.log(4) + 4 * 2 * est.se


def test_js_lower_bound_disjoint_distributions_near_log2():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2000, 2, generator=g)
    b = torch.randn(2000, 2, generator=g) + torch.tensor([20.0, 0.0])  # 20 sd apart
    est = js_lower_bound(a, b, seed=0)
    # JSD = log 2 for disjoint supports; log D <= 0 caps the estimate at log 2.
    assert 0.97 * LOG2 <= est.js_lower_bound <= LOG2
    assert est.v_hat <= 0


def test_js_lower_bound_is_seeded_and_leaves_global_rng_alone():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g) + 0.5
    torch.manual_seed(11)
    before = torch.get_rng_state()
    first = js_lower_bound(a, b, seed=2, steps=60)
    assert torch.equal(torch.get_rng_state(), before)
    assert js_lower_bound(a, b, seed=2, steps=60) == first
    assert first.n_train == 200 and first.n_test == 200


def test_js_lower_bound_balances_unequal_sets():
    g = torch.Generator().manual_seed(6)
    est = js_lower_bound(torch.randn(1000, 2, generator=g), torch.randn(300, 2, generator=g), seed=0, steps=40)
    assert est.n_train == 150 and est.n_test == 150


# -- images: a tiny MNIST through `gan prepare`'s data code and domain classifier ----------------

MNIST_N = 500
MNIST_SPLITS = 5


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def mnist(tmp_path_factory):
    from gancore.classifiers import classify, load_classifier
    from gancore.data import load_prepared
    from gancore.data.prepare import prepare_data

    mirror = os.environ.get("GANCORE_DATASETS_DIR")
    if not mirror or not (Path(mirror) / "MNIST").exists():
        pytest.skip(f"no MNIST mirror (GANCORE_DATASETS_DIR={mirror!r}); the machine has no network")
    root = tmp_path_factory.mktemp("mnist")
    params = Params(
        device="cpu",
        data={"name": "mnist", "n_train": 3000, "n_test": MNIST_N, "classifier_epochs": 3},
        sample={"n": MNIST_N},
        evaluate={"splits": MNIST_SPLITS},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANCORE_DATASETS_DIR", mirror)
        mp.setenv("GANCORE_CACHE_DIR", str(root / "cache"))  # a fresh classifier, not a cached one
        prepare_data(params, Layout(root / "prep"))
    prepared = load_prepared(Layout(root / "prep").prepared)
    real_probs, _ = classify(load_classifier("domain", Layout(root / "prep")), prepared.test, 256, "cpu")
    q = torch.bincount(real_probs.argmax(1), minlength=10).double() / len(real_probs)

    def run(name: str, samples: torch.Tensor) -> dict:
        layout = Layout(root / name)
        layout.root.mkdir()
        (layout.root / "data").symlink_to(root / "prep" / "data")
        write_samples(layout, samples)
        evaluate(params, layout)
        return read_result(layout)

    # "Generator" 1: other draws of the same law (training images; the classifier has seen them,
    # which can only sharpen their posteriors a little).
    # "Generator" 2: complete collapse, one held-out image repeated.
    c0 = int(real_probs[0].argmax())  # the class of the image the collapsed "generator" repeats
    return prepared, q, c0, run("same", prepared.train[:MNIST_N]), run("collapsed", prepared.test[:1].repeat(MNIST_N, 1, 1, 1))


@pytest.mark.xdist_group("evaluation-mnist")  # one module fixture for all of them, not one per worker
def test_mnist_same_distribution(mnist):
    prepared, _, _, r, _ = mnist
    assert set(r) == KEYS
    assert r["feature_space"] == "domain:128"
    assert r["classifier_test_accuracy"] == prepared.meta["classifier"]["test_accuracy"]
    assert r["n_generated"] == r["n_real"] == MNIST_N and r["num_classes"] == 10
    # Two independent 500-draw histograms over 10 classes: E[KL] ~ 9/2 (2/500) = 0.018, sd ~
    # sqrt(18)/2 (2/500) = 0.0085; JS ~ KL/4.
    assert r["kl_divergence"] < 0.06
    assert r["js_divergence"] < 0.015
    # Exchangeable sets: the same IS in expectation; the difference of two means over 5 splits
    # has sd ~ sqrt(2/5) * (per-split sd).
    assert abs(r["is_mean"] - r["is_real_mean"]) < 4 * math.sqrt(2 / MNIST_SPLITS) * max(r["is_std"], r["is_real_std"]) + 0.05
    # Density and coverage expectations for identical laws hold in any dimension (Naeem 2020):
    # E[density] = 1, E[coverage] ~ 1 - 2^-5. With 500 points the sd is a few percent.
    assert r["density"] == pytest.approx(1.0, abs=0.15)
    assert r["coverage"] == pytest.approx(1 - 2**-5, abs=0.04)
    assert abs(r["precision"] - r["recall"]) < 0.1
    assert r["js_lower_bound"] <= 4 * r["js_lower_bound_se"] + 1e-9


@pytest.mark.xdist_group("evaluation-mnist")  # one module fixture for all of them, not one per worker
def test_mnist_collapse(mnist):
    _, q, c0, _, r = mnist
    # Identical images get identical posteriors, so p(y) = p(y|x): IS = 1 whatever the classifier.
    assert r["is_mean"] == pytest.approx(1.0, abs=1e-9)
    assert r["classes_generated"] == 1
    # KL(delta_c || q) = -log q_c for the class c the repeated image is assigned to.
    assert r["kl_divergence"] == pytest.approx(-math.log(float(q[c0])), rel=1e-9)
    assert r["kl_to_uniform"] == pytest.approx(math.log(10), rel=1e-12)
    # Every generated point is the same, so its k-NN radius is 0 and, with strict comparisons,
    # no real point lies in a generated ball.
    assert r["recall"] == 0.0
    assert r["coverage"] < 0.05
    # A point mass against a spread of 500 distinct images: disjoint supports, JSD = log 2.
    assert r["js_lower_bound"] > 0.9 * LOG2


class FakeInception:
    """The classifier contract with a fixed random projection (Inception's weights need a download)."""

    name = "inception"
    num_classes = 10
    feature_dim = 16

    def __init__(self, in_dim: int):
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(in_dim, self.num_classes + self.feature_dim, generator=g)

    def to(self, device):
        return self

    def describe(self):
        return {"feature_network": "a fixed random projection", "weights": "seed 0", "resize": "none", "input_range": "[-1, 1]"}

    def predict(self, x):
        from gancore.data.prepared import to_model_range

        out = to_model_range(x).flatten(1) @ self.w
        return torch.softmax(out[:, : self.num_classes].double() * 0.3, dim=1), out[:, self.num_classes :].float()


def test_unlabelled_images_with_an_inception_classifier(tmp_path, monkeypatch):
    import gancore.classifiers

    calls = []

    def fake_load(name, layout, device="cpu"):
        calls.append((name, str(device)))
        return FakeInception(3 * 8 * 8)

    monkeypatch.setattr(gancore.classifiers, "load_classifier", fake_load)
    layout = Layout(tmp_path)
    images = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    meta = image_meta(
        "image_folder",
        [3, 8, 8],
        300,
        300,
        {"count": None, "definition": "none"},
        classifier={"kind": "none", "reason": "no labels", "test_accuracy": None},
    )
    save_prepared(layout.prepared, PreparedData(meta, images, images))
    write_samples(layout, images.clone())  # a "generator" that returns the held-out set itself
    params = Params(
        device="cpu",
        data={"name": "image_folder", "path": str(tmp_path), "image_size": 8},
        evaluate={"classifier": "inception", "splits": 5},
    )
    summary = evaluate(params, layout)
    r = read_result(layout)
    assert calls == [("inception", "cpu")]
    assert r["feature_space"] == "inception:16" and r["classifier"] == "inception"
    assert r["classifier_test_accuracy"] is None
    # Identical sets through one classifier: identical probabilities, histograms and splits.
    assert r["is_mean"] == r["is_real_mean"] and r["is_std"] == r["is_real_std"]
    assert r["kl_divergence"] == 0.0 and r["js_divergence"] == 0.0
    # Every generated point coincides with a real one (distance 0 < its real ball's radius).
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0
    assert r["fid"] == pytest.approx(0.0, abs=1e-6)
    assert summary["js_lower_bound"] <= 4 * r["js_lower_bound_se"] + 1e-9
