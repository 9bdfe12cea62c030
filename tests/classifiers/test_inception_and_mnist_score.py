"""Inception networks (random weights: the wiring and our maths, not ImageNet), their weights
missing offline, and the published "MNIST score" of the domain classifier.

The one slow test trains the MNIST domain classifier on the full training set (through the
weights cache: set GANCORE_CACHE_DIR to keep it between runs) and checks the "MNIST score" of the
test set against the published 9.88 +- 0.06 (reference.md).
"""

from __future__ import annotations

import sys
import time
import urllib.error

import pytest
import torch

from gancore.classifiers import classify, load_classifier
from gancore.config import Params
from gancore.data.prepared import to_model_range
from gancore.errors import EvaluationError
from gancore.layout import Layout

TV_FILE = "inception_v3_google-0cc3c7bd.pth"
TF_FILE = "weights-inception-2015-12-05-6726825d.pth"


# -- Inception networks (random weights: the wiring and our maths, not ImageNet) -----------------


def _capture_input(module: torch.nn.Module, store: list) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_pre_hook(lambda m, args: store.append(args[0].detach().clone()))


def test_torchvision_inception_preprocessing_and_outputs():
    from torchvision.models import Inception_V3_Weights, inception_v3
    from torchvision.transforms import functional as TF

    from gancore.classifiers.inception import IMAGENET_MEAN, IMAGENET_STD, inception

    assert Inception_V3_Weights.IMAGENET1K_V1.url.endswith(TV_FILE)
    torch.manual_seed(0)
    clf = inception(pretrained=False)
    assert (clf.num_classes, clf.feature_dim, clf.name) == (1000, 2048, "inception")
    net = clf.module.network
    seen: list[torch.Tensor] = []
    _capture_input(net.Conv2d_1a_3x3, seen)

    gen = torch.Generator().manual_seed(1)
    grey = torch.rand(2, 1, 28, 28, generator=gen) * 2 - 1
    probs, features = clf.predict(grey)
    assert probs.shape == (2, 1000) and features.shape == (2, 2048)
    assert probs.dtype == torch.float64 and features.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(2, dtype=torch.float64), atol=1e-12)

    # What the network saw, computed independently with torchvision's transforms.
    expected = TF.normalize(TF.resize((grey.repeat(1, 3, 1, 1) + 1) / 2, [299, 299], antialias=False), IMAGENET_MEAN, IMAGENET_STD)
    assert seen[0].shape == (2, 3, 299, 299)
    assert torch.allclose(seen[0], expected, atol=1e-5)
    # A constant image stays constant through the resize: ((v + 1) / 2 - mean_c) / std_c exactly.
    clf.predict(torch.full((1, 3, 32, 32), 0.5))
    for c in range(3):
        assert torch.allclose(seen[1][0, c], torch.tensor((0.75 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]), atol=1e-6)

    # The split-off fc reproduces torchvision's own forward (transform_input=False, same weights).
    reference = inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False).eval()
    state = {f"network.{k}" if not k.startswith("fc.") else k: v for k, v in reference.state_dict().items()}
    missing, unexpected = clf.module.load_state_dict(state, strict=False)
    assert not missing and all(k.startswith("network.AuxLogits") for k in unexpected)
    with torch.no_grad():
        logits = reference(expected)
    probs, _ = clf.predict(grey)
    assert torch.allclose(probs, torch.softmax(logits.double(), 1), rtol=1e-4, atol=1e-9)

    with pytest.raises(EvaluationError, match="1 or 3"):
        clf.predict(torch.zeros(1, 2, 8, 8))


def _tf_extractor_with_random_weights(monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with monkeypatch.context() as m:
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        return tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased", "2048"])


def test_inception_tf_reads_hub_cache_and_feeds_uint8(tmp_path, monkeypatch):
    extractor = _tf_extractor_with_random_weights(monkeypatch)
    (tmp_path / "checkpoints").mkdir()
    torch.save(extractor.state_dict(), tmp_path / "checkpoints" / TF_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)

    clf = load_classifier("inception_tf", Layout(tmp_path))
    assert (clf.num_classes, clf.feature_dim, clf.name) == (1008, 2048, "inception_tf")
    seen: list[torch.Tensor] = []
    clf.module.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    probs, features = clf.predict(to_model_range(images))
    # uint8 -> model range -> uint8 is exact, and grey is repeated to RGB.
    assert seen[0].dtype == torch.uint8 and torch.equal(seen[0], images.repeat(1, 3, 1, 1))
    assert probs.shape == (2, 1008) and features.shape == (2, 2048)
    with torch.no_grad():
        logits, pool = extractor(images.repeat(1, 3, 1, 1))
    assert torch.allclose(probs, torch.softmax(logits.double(), 1), rtol=1e-6, atol=0)
    assert torch.allclose(features, pool, atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(2, dtype=torch.float64), atol=1e-12)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network (test)")


@pytest.mark.parametrize(
    ("name", "filename", "url"),
    [
        ("inception", TV_FILE, "https://download.pytorch.org/models/" + TV_FILE),
        ("inception_tf", TF_FILE, "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + TF_FILE),
    ],
)
def test_missing_weights_offline_name_file_folder_and_url(tmp_path, monkeypatch, name, filename, url):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    # Without the offline package (gancore[inception]) the TF weights can only come from the URL.
    monkeypatch.setattr("gancore.classifiers.tf_weights.weights_file", lambda: None)
    start = time.perf_counter()
    with pytest.raises(EvaluationError) as err:
        load_classifier(name, Layout(tmp_path))
    message = str(err.value)
    assert filename in message and str(tmp_path / "hub" / "checkpoints") in message and url in message
    assert "no network (test)" in message
    assert time.perf_counter() - start < 30


def test_inception_tf_without_torch_fidelity(monkeypatch):
    # A None entry in sys.modules makes the import raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(EvaluationError, match=r"needs torch-fidelity.*pip install 'gancore\[inception\]'"):
        load_classifier("inception_tf", Layout("."))


# -- the published "MNIST score" -----------------------------------------------------------------

# The published 9.8793 +- 0.0614 comes from a classifier trained to convergence (ChunyuanLI's: 10
# epochs over 5x augmented data), whose confidence exceeds its accuracy. After the default 3 epochs
# ours is nearly calibrated and so less confident: measured 9.79 / 9.79 / 9.81 (seeds 0 / 1 / 2) at
# 99.45-99.54% accuracy, i.e. on the edge of the band. After 8 epochs: 9.870 at 99.58%.
CONVERGED_EPOCHS = 8


@pytest.fixture(scope="session")
def mnist_full(tmp_path_factory):
    """MNIST prepared in full with a converged domain classifier, fitted once per session (cached)."""
    from gancore.data.prepare import prepare_data

    root = tmp_path_factory.mktemp("mnist_full")
    p = Params(device="cpu", data={"name": "mnist", "n_train": None, "n_test": None, "classifier_epochs": CONVERGED_EPOCHS})
    start = time.perf_counter()
    summary = prepare_data(p, Layout(root))
    return Layout(root), summary, time.perf_counter() - start


@pytest.mark.slow
def test_mnist_score_of_the_test_set_matches_the_published_value(mnist_full):
    from gancore.data import load_prepared
    from gancore.metrics import inception_score

    layout, summary, seconds = mnist_full
    data = load_prepared(layout.prepared)
    info = data.meta["classifier"]
    assert len(data.test) == 10_000 and len(data.train) == 60_000
    assert info["epochs"] == CONVERGED_EPOCHS and info["test_accuracy"] >= 0.99

    clf = load_classifier("domain", layout)
    probs, features = classify(clf, data.test, batch_size=1000)
    assert features.shape == (10_000, 128)
    assert (probs.argmax(1) == data.test_labels).double().mean().item() == pytest.approx(info["test_accuracy"], abs=1e-12)
    mean, std = inception_score(probs, splits=10)
    print(
        f"\nMNIST score of the test set: {mean:.4f} +- {std:.4f}; accuracy {info['test_accuracy']:.4f}; "
        f"({info['epochs']} epochs, cache {summary.get('classifier_cache')}); prepare {seconds:.1f} s"
    )
    # Published 9.8793 +- 0.0614 (ChunyuanLI/MNIST_Inception_Score); 10 classes cap it at 10.
    assert 9.8 <= mean <= 9.95
    # Split scores of 1,000 images each: the published spread is 0.06.
    assert 0 < std < 0.2
