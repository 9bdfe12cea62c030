"""Classifiers giving p(y|x) and features: Gaussian posterior, domain CNNs, load_classifier's errors.

Inception networks and the published "MNIST score": test_inception_and_mnist_score.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gancore.classifiers import Classifier, classify, domain, load_classifier
from gancore.classifiers.domain import (
    CNNClassifier,
    ConvNet,
    GaussianPosterior,
    StackedDigitClassifier,
    fit_domain_classifier,
)
from gancore.config import Params
from gancore.data.prepared import PreparedData, save_prepared, to_model_range
from gancore.errors import EvaluationError
from gancore.io import write_json
from gancore.layout import Layout


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(domain.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "classifiers"


def ring_centers() -> torch.Tensor:
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    return torch.stack([torch.cos(angles), torch.sin(angles)], 1)


def vector_data(centers: torch.Tensor, sigma: float, n: int, seed: int = 0) -> PreparedData:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(centers), (2 * n,), generator=gen)
    points = (centers[labels] + sigma * torch.randn(2 * n, 2, generator=gen, dtype=torch.float64)).float()
    meta = {"name": "ring8", "kind": "vector", "shape": [2], "modes": {"count": len(centers), "centers": centers.tolist(), "sigma": sigma}}
    return PreparedData(meta, points[:n], points[n:], labels[:n], labels[n:])


def bar_images(n: int, channels: int = 1, size: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An easy 10-class image task: class k is a bright bar in row band k // 2, left or right half
    by k % 2, on noise. Bands are 5 px apart at 28 px, so the +-2 px training shifts keep classes apart."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    x = torch.rand(n, channels, size, size, generator=gen) * 60
    scale = size / 28
    for i, k in enumerate(labels.tolist()):
        row, left = int((3 + 5 * (k // 2)) * scale), int((2 + 13 * (k % 2)) * scale)
        x[i, :, row, left : left + int(11 * scale)] = 255
    return x.to(torch.uint8), labels


def image_data(name: str, n: int, channels: int = 1, size: int = 28, labelled: bool = True, n_test: int = 200) -> PreparedData:
    train, train_labels = bar_images(n, channels, size, seed=1)
    test, test_labels = bar_images(n_test, channels, size, seed=2)
    meta = {"name": name, "kind": "image", "shape": [channels, size, size], "modes": {"count": 10 if labelled else None}}
    if not labelled:
        return PreparedData(meta, train, test)
    return PreparedData(meta, train, test, train_labels, test_labels)


def params(name: str, epochs: int = 3, seed: int = 0, **data) -> Params:
    return Params(seed=seed, device="cpu", data={"name": name, "classifier_epochs": epochs, **data})


# -- Gaussian posterior -------------------------------------------------------------------------


def test_gaussian_posterior_is_exact_at_centres_and_midpoints():
    centers = ring_centers()
    clf = GaussianPosterior(centers, 0.01)
    probs, features = clf.predict(centers.float())
    assert probs.dtype == torch.float64 and probs.shape == (8, 8)
    # Neighbours lie 0.765 = 76 sigma away: exp(-76^2 / 2) underflows, so the posterior is one-hot.
    assert torch.equal(probs.argmax(1), torch.arange(8))
    assert torch.allclose(probs, torch.eye(8, dtype=torch.float64), atol=1e-300, rtol=1e-12)
    assert torch.equal(features, centers.float())

    # Midpoints of neighbours are equidistant from both: 1/2 each, up to float32 rounding of the
    # point (1e-7 in distance, times d/sigma^2 = 3.8e3 in the exponent -> 1e-3 at most).
    mid = ((centers + centers.roll(-1, 0)) / 2).float()
    probs, _ = clf.predict(mid)
    pair = torch.stack([probs[torch.arange(8), torch.arange(8)], probs[torch.arange(8), (torch.arange(8) + 1) % 8]], 1)
    assert torch.allclose(pair, torch.full_like(pair, 0.5), atol=1e-3)
    assert torch.allclose(pair.sum(1), torch.ones(8, dtype=torch.float64), atol=1e-12)


def test_gaussian_posterior_matches_bayes_rule_by_hand():
    # Wide components so that every centre keeps a visible share; grid25's centres.
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    centers = torch.cartesian_prod(axis, axis)
    sigma = 1.5
    x = torch.tensor([[0.3, -0.7], [3.9, 4.2], [-1.0, 1.0]], dtype=torch.float32)
    density = torch.stack([torch.exp(-((x.double() - c) ** 2).sum(1) / (2 * sigma**2)) for c in centers], 1)
    expected = density / density.sum(1, keepdim=True)
    probs, _ = GaussianPosterior(centers, sigma).predict(x)
    assert torch.allclose(probs, expected, rtol=1e-12, atol=0)
    # Far from every centre float32 softmax or a naive exp would give 0/0; float64 max-shift does not.
    far, _ = GaussianPosterior(centers, 0.01).predict(torch.tensor([[100.0, 100.0]]))
    assert far.isfinite().all() and far[0, 24].item() == pytest.approx(1.0)


def test_fit_gaussian_posterior_records_accuracy_and_reloads(tmp_path):
    centers = ring_centers()
    # sigma 0.4 overlaps neighbours, so the accuracy is well inside (0, 1) and checkable by hand.
    data = vector_data(centers, 0.4, 2000)
    info = fit_domain_classifier(data, params("ring8"), tmp_path)
    nearest = torch.cdist(data.test.double(), centers).argmin(1)
    assert info["kind"] == "gaussian_posterior" and "file" not in info
    assert info["test_accuracy"] == pytest.approx((nearest == data.test_labels).double().mean().item(), abs=1e-12)
    assert 0.3 < info["test_accuracy"] < 0.95
    assert info["epochs"] == 0 and info["seconds"] >= 0

    data.meta["classifier"] = info
    save_prepared(tmp_path / "data" / "prepared", data)
    clf = load_classifier("domain", Layout(tmp_path))
    assert (clf.num_classes, clf.feature_dim, clf.name) == (8, 2, "domain")
    probs, features = classify(clf, data.test, batch_size=300)
    assert torch.equal(probs.argmax(1), nearest)
    assert torch.equal(features, data.test)


# -- CNNs: outputs, batching, stacked outer product ----------------------------------------------


def random_cnn(in_channels: int = 1, num_classes: int = 10, seed: int = 0) -> ConvNet:
    torch.manual_seed(seed)
    net = ConvNet(in_channels, num_classes, **{k: v for k, v in domain.GREY_ARCH.items()})
    # Non-trivial BN statistics so that eval-mode batch norm is exercised.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def test_classify_batches_equal_one_predict_and_accept_uint8():
    clf = CNNClassifier(random_cnn(), 10, 128)
    images, _ = bar_images(10)
    x = to_model_range(images)
    probs, features = clf.predict(x)
    assert probs.dtype == torch.float64 and features.dtype == torch.float32
    assert probs.shape == (10, 10) and features.shape == (10, 128)
    assert torch.allclose(probs.sum(1), torch.ones(10, dtype=torch.float64), atol=1e-12)
    # Eval mode: every image's output is independent of its batch; only conv summation order may differ.
    bp, bf = classify(clf, x, batch_size=3)
    assert torch.allclose(bp, probs, atol=1e-6) and torch.allclose(bf, features, atol=1e-5)
    up, uf = classify(clf, images, batch_size=4)
    assert torch.allclose(up, probs, atol=1e-6) and torch.allclose(uf, features, atol=1e-5)
    ep, ef = classify(clf, x[:0])
    assert ep.shape == (0, 10) and ef.shape == (0, 128)


def test_stacked_probs_are_the_outer_product_of_the_channels():
    net = random_cnn()
    clf = StackedDigitClassifier(net, channels=3, digit_classes=10, digit_features=128)
    digits, _ = bar_images(12)
    x = to_model_range(digits.reshape(4, 3, 28, 28))
    probs, features = clf.predict(x)
    assert probs.shape == (4, 1000) and features.shape == (4, 384) and clf.num_classes == 1000
    assert torch.allclose(probs.sum(1), torch.ones(4, dtype=torch.float64), atol=1e-12)

    with torch.no_grad():
        logits, feats = net(x.reshape(12, 1, 28, 28))
    p = torch.softmax(logits.double(), 1).reshape(4, 3, 10)
    d0, d1, d2 = 7, 2, 5
    assert torch.allclose(probs[:, d0 * 100 + d1 * 10 + d2], p[:, 0, d0] * p[:, 1, d1] * p[:, 2, d2], rtol=1e-12)
    expected = torch.einsum("bi,bj,bk->bijk", p[:, 0], p[:, 1], p[:, 2]).reshape(4, 1000)
    assert torch.allclose(probs, expected, rtol=1e-12, atol=0)
    best = p.argmax(2)
    assert torch.equal(probs.argmax(1), best[:, 0] * 100 + best[:, 1] * 10 + best[:, 2])
    assert torch.allclose(features, feats.reshape(4, 384), atol=1e-6)


def test_stacked_training_set_splits_channels_and_removes_duplicates():
    digits, labels = bar_images(5)
    pick = torch.tensor([[0, 1, 2], [3, 4, 0], [1, 1, 2]])  # digits 0, 1, 2 repeat
    train = digits[pick].reshape(3, 3, 28, 28)
    triple = labels[pick[:, 0]] * 100 + labels[pick[:, 1]] * 10 + labels[pick[:, 2]]
    images, digit_labels = domain._stacked_training_set(train, triple)
    assert images.shape == (5, 1, 28, 28)
    for image, label in zip(images, digit_labels):
        source = [i for i in range(5) if torch.equal(digits[i], image)]
        assert len(source) == 1 and labels[source[0]] == label


def test_augment_translates_within_shift():
    x = torch.full((64, 1, 28, 28), -1.0)
    x[:, 0, 14, 14] = 1.0
    gen = torch.Generator().manual_seed(0)
    out = domain._augment(x, 2, False, gen)
    assert out.shape == x.shape
    hit = (out == 1.0).nonzero()[:, 2:]
    assert len(hit) == 64 and ((hit - 14).abs() <= 2).all()
    assert len({tuple(h.tolist()) for h in hit}) > 10  # per-image offsets, not one for the batch
    assert torch.equal(domain._augment(x, 0, False, gen), x)


# -- fitting domain CNNs ------------------------------------------------------------------------


def test_fit_cnn_learns_saves_and_caches(tmp_path, cache, monkeypatch):
    layout = Layout(tmp_path)
    data = image_data("mnist", 1200)
    info = fit_domain_classifier(data, params("mnist"), layout.prepared)
    assert info["kind"] == "cnn" and info["file"] == "classifier.pt" and info["cache"] == "miss"
    # Bars are easily separable; chance is 0.1.
    assert info["test_accuracy"] >= 0.95
    assert info["epochs"] == 3 and info["seconds"] > 0 and info["num_classes"] == 10 and info["feature_dim"] == 128

    ckpt = torch.load(layout.prepared / "classifier.pt", weights_only=True)
    assert {"state_dict", "arch", "num_classes", "in_channels", "image_size", "kind"} <= set(ckpt)
    assert (ckpt["num_classes"], ckpt["in_channels"], ckpt["image_size"]) == (10, 1, 28)

    data.meta["classifier"] = info
    save_prepared(layout.prepared, data)
    clf = load_classifier("domain", layout)
    assert isinstance(clf, CNNClassifier) and (clf.num_classes, clf.feature_dim) == (10, 128)
    probs, _ = classify(clf, data.test, 64)
    assert (probs.argmax(1) == data.test_labels).double().mean().item() == pytest.approx(info["test_accuracy"], abs=1e-12)

    # Same data, settings and seed: the cached weights are reused bit for bit, accuracy re-measured.
    again = tmp_path / "again"
    hit = fit_domain_classifier(data, params("mnist"), again)
    assert hit["cache"] == "hit" and hit["cache_key"] == info["cache_key"]
    assert hit["test_accuracy"] == info["test_accuracy"] and hit["seconds"] == info["seconds"]
    reloaded = torch.load(again / "classifier.pt", weights_only=True)
    assert all(torch.equal(reloaded["state_dict"][k], v) for k, v in ckpt["state_dict"].items())
    assert len(list(cache.glob("*.pt"))) == 1
    # Another seed is another key.
    other = fit_domain_classifier(data, params("mnist", seed=1), tmp_path / "other")
    assert other["cache"] == "miss" and other["cache_key"] != info["cache_key"]
    # An edit to the code that trains it is another key (DVC reruns prepare on such an edit, and
    # a hand-bumped version number had served the old code's weights).
    from gancore.classifiers import domain_cache

    key = domain_cache.cache_key("cnn", {"a": 1}, {"s": 1}, data.train, data.train_labels, torch.device("cpu"))
    assert domain_cache.cache_key("cnn", {"a": 1}, {"s": 1}, data.train, data.train_labels, torch.device("cuda")) != key
    monkeypatch.setattr(domain_cache, "code_digest", lambda: "edited")
    assert domain_cache.cache_key("cnn", {"a": 1}, {"s": 1}, data.train, data.train_labels, torch.device("cpu")) != key


def test_fit_is_deterministic_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(domain.CACHE_ENV, "off")
    data = image_data("fashion_mnist", 300)
    a = fit_domain_classifier(data, params("fashion_mnist", epochs=1), tmp_path / "a")
    b = fit_domain_classifier(data, params("fashion_mnist", epochs=1), tmp_path / "b")
    assert a["cache"] == b["cache"] == "off"
    wa = torch.load(tmp_path / "a" / "classifier.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "classifier.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fit_cnn_handles_other_sizes_and_colour(tmp_path, cache):
    # 3 channels at 64 px: the colour network with adaptive pooling.
    data = image_data("image_folder", 12, channels=3, size=64, n_test=6)
    info = fit_domain_classifier(data, params("image_folder", epochs=1, image_size=64), tmp_path)
    ckpt = torch.load(tmp_path / "classifier.pt", weights_only=True)
    assert ckpt["in_channels"] == 3 and ckpt["image_size"] == 64 and ckpt["arch"]["widths"] == domain.COLOUR_ARCH["widths"]
    model = domain.classifier_from_checkpoint(ckpt)
    probs, features = model.predict(data.test_float()[:5])
    assert probs.shape == (5, 10) and features.shape == (5, 128)
    assert 0.0 <= info["test_accuracy"] <= 1.0


def test_fit_stacked_records_triple_and_digit_accuracy(tmp_path, cache):
    digits, labels = bar_images(900, seed=3)
    train = digits.reshape(300, 3, 28, 28)
    triple = labels.reshape(300, 3) @ torch.tensor([100, 10, 1])
    tdigits, tlabels = bar_images(300, seed=4)
    test = tdigits.reshape(100, 3, 28, 28)
    ttriple = tlabels.reshape(100, 3) @ torch.tensor([100, 10, 1])
    meta = {"name": "stacked_mnist", "kind": "image", "shape": [3, 28, 28], "modes": {"count": 1000}}
    data = PreparedData(meta, train, test, triple, ttriple)
    layout = Layout(tmp_path)
    info = fit_domain_classifier(data, params("stacked_mnist", epochs=4), layout.prepared)
    assert info["kind"] == "stacked_cnn" and info["num_classes"] == 1000 and info["feature_dim"] == 384
    assert info["train_examples"] == 900
    assert len(info["per_digit_accuracy"]) == 3 and min(info["per_digit_accuracy"]) >= 0.9
    # A triple is right only if its three digits are: accuracy <= the worst digit's and >= 1 - sum of errors.
    errors = sum(1 - a for a in info["per_digit_accuracy"])
    assert 1 - errors - 1e-9 <= info["test_accuracy"] <= min(info["per_digit_accuracy"]) + 1e-9

    data.meta["classifier"] = info
    save_prepared(layout.prepared, data)
    clf = load_classifier("domain", layout)
    assert isinstance(clf, StackedDigitClassifier)
    probs, features = classify(clf, test, 32)
    assert probs.shape == (100, 1000) and features.shape == (100, 384)
    assert (probs.argmax(1) == ttriple).double().mean().item() == pytest.approx(info["test_accuracy"], abs=1e-12)


def test_no_domain_classifier_without_labels_or_epochs(tmp_path):
    unlabelled = image_data("image_folder", 20, channels=3, labelled=False)
    info = fit_domain_classifier(unlabelled, params("image_folder", image_size=28), tmp_path)
    assert info["kind"] == "none" and info["test_accuracy"] is None and "file" not in info
    assert fit_domain_classifier(image_data("mnist", 20), params("mnist", epochs=0), tmp_path)["kind"] == "none"
    assert not (tmp_path / "classifier.pt").exists()

    unlabelled.meta["classifier"] = info
    save_prepared(tmp_path / "data" / "prepared", unlabelled)
    with pytest.raises(EvaluationError, match="evaluate.classifier=inception"):
        load_classifier("domain", Layout(tmp_path))


# -- load_classifier errors ---------------------------------------------------------------------


def test_load_classifier_errors(tmp_path):
    with pytest.raises(EvaluationError, match="unknown classifier 'resnet'.*domain, inception, inception_tf"):
        load_classifier("resnet", Layout(tmp_path))
    prepared = tmp_path / "data" / "prepared"
    write_json(
        prepared / "meta.json",
        {
            "name": "mnist",
            "kind": "image",
            "shape": [1, 28, 28],
            "classifier": {"kind": "cnn", "file": "classifier.pt", "test_accuracy": 0.99},
        },
    )
    with pytest.raises(EvaluationError) as err:
        load_classifier("domain", Layout(tmp_path))
    assert str(prepared / "classifier.pt") in str(err.value) and "gan prepare" in str(err.value)
    (prepared / "classifier.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EvaluationError, match="could not be loaded.*gan prepare"):
        load_classifier("domain", Layout(tmp_path))


# -- the registry (gancore.classifier_choices) ---------------------------------------------------


class _PlantedSpace(Classifier):
    """A feature space added the way CONTRIBUTING.md says: forward, describe, a loader, one entry."""

    name = "planted"
    num_classes = 0
    feature_dim = 3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(1)
        return flat.new_zeros((len(x), 0)), torch.stack([flat.mean(1), flat.std(1), flat.amax(1)], 1)

    def describe(self) -> dict[str, str]:
        return {"feature_network": "mean, std and max of the pixels", "weights": "-", "resize": "none", "input_range": "[-1, 1]"}


def _load_planted(layout: Layout) -> Classifier:
    return _PlantedSpace()


def test_a_registered_feature_space_is_loaded_by_name_and_carries_its_card(tmp_path, monkeypatch):
    from gancore import classifier_choices
    from gancore.provenance import card

    spec = classifier_choices.ClassifierSpec("planted", f"{__name__}:_load_planted", "pixel moments", "none")
    monkeypatch.setitem(classifier_choices.REGISTRY, "planted", spec)
    clf = load_classifier("planted", Layout(tmp_path))
    x = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)
    probs, features = classify(clf, x, batch_size=1)
    assert probs.shape == (2, 0) and torch.allclose(features[:, 2], x.flatten(1).amax(1))
    prepared = PreparedData({"name": "mnist", "count_test": 4}, torch.zeros(4, 1, 28, 28), torch.zeros(4, 1, 28, 28))
    provenance = card(Params(), prepared, clf.describe(), n_real=4, n_generated=2)
    assert provenance["feature_network"] == "mean, std and max of the pixels" and provenance["n_generated"] == 2


def test_every_registered_loader_resolves_and_a_classifier_must_describe_itself():
    from gancore.classifier_choices import REGISTRY

    assert all(callable(spec.loader()) for spec in REGISTRY.values())
    with pytest.raises(NotImplementedError, match="Bare must describe its network, weights, resize and input range"):
        type("Bare", (Classifier,), {})().describe()
