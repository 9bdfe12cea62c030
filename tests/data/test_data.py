"""The prepare stage: 2D mixtures, raw files (corrupted, missing, a fake CIFAR-10 archive), the
stage's outputs.

Image sets (torchvision's, Stacked MNIST, image folders): test_image_sets.py.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import shutil
import sys
import tarfile
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from scipy import stats

from gancore.config import validate
from gancore.data import CLASSIFIER_FILE, DATA_FILE, META_FILE, load_prepared
from gancore.data.prepare import prepare_data
from gancore.data.toy import grid25, ring8
from gancore.errors import DataError
from gancore.io import read_json
from gancore.layout import DATASETS_ENV, Layout

MNIST_MD5 = dict(torchvision.datasets.MNIST.resources)


def make_params(seed: int = 0, **data):
    # No mixture: these tests are about the data; the partition has tests/test_mixture.py.
    return validate({"seed": seed, "data": {"classifier_epochs": 0, **data}, "mixture": {"enabled": False}}, check_plugins=False)


def shared_layout(tmp_path: Path, raw: Path) -> Layout:
    (tmp_path / "data").mkdir(parents=True)
    (tmp_path / "data" / "raw").symlink_to(raw, target_is_directory=True)
    return Layout(tmp_path)


def no_download(monkeypatch) -> None:
    """Make the network unreachable for torchvision (which reaches it only through download_url)."""
    utils = torchvision.datasets.utils
    real = utils.download_url

    def offline(url, root, filename=None, md5=None, **kwargs):
        if utils.check_integrity(os.path.join(root, filename or os.path.basename(url)), md5):
            return real(url, root, filename, md5, **kwargs)  # present and valid: no network needed
        raise urllib.error.URLError(f"network disabled by the test ({url})")

    monkeypatch.setattr(utils, "download_url", offline)


# -- 2D mixtures ----------------------------------------------------------------------------------


def test_ring8_has_8_distinct_centres_on_the_unit_circle():
    c = ring8().centers
    assert c.shape == (8, 2)
    assert torch.allclose(c.norm(dim=1), torch.ones(8, dtype=torch.float64), atol=1e-12)
    d = torch.cdist(c, c) + torch.eye(8, dtype=torch.float64) * 10
    # Neighbours on the circle are 2 sin(pi/8) apart; linspace(0, 2 pi, 8) would put two at distance 0.
    assert d.min().item() >= 2 * math.sin(math.pi / 8) - 1e-12
    assert torch.allclose(c[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(c[2], torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-12)


def test_grid25_centres_are_the_5x5_grid():
    c = grid25().centers
    assert sorted(map(tuple, c.tolist())) == [(x, y) for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)]


@pytest.mark.parametrize("name,count,sigma", [("ring8", 8, 0.01), ("grid25", 25, 0.05)])
def test_toy_prepare_follows_the_protocol(tmp_path, name, count, sigma):
    layout = Layout(tmp_path)
    summary = prepare_data(make_params(name=name), layout)
    assert summary["count"] == 50_000 and summary["count_test"] == 10_000 and summary["modes"] == count
    data = load_prepared(layout.prepared)
    meta = data.meta
    assert meta["kind"] == "vector" and meta["shape"] == [2] and meta["storage"] == "float32"
    assert meta["modes"]["count"] == count and meta["modes"]["sigma"] == sigma and meta["raw_sha256"] == {}
    assert "sigma" in meta["modes"]["definition"] and str(count) in meta["modes"]["definition"]
    centers = torch.tensor(meta["modes"]["centers"], dtype=torch.float64)
    lo, hi = centers.min().item() - 4 * sigma, centers.max().item() + 4 * sigma
    assert meta["value_range"] == pytest.approx([lo, hi])
    for x, y in ((data.train, data.train_labels), (data.test, data.test_labels)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        x = x.double()
        # Centres are >= 0.77 apart and sigma <= 0.05: every point's nearest centre is its own.
        assert torch.equal(torch.cdist(x, centers).argmin(dim=1), y)
        residual = x - centers[y]
        m = residual.numel()
        # sum(r^2) / sigma^2 ~ chi2 with m degrees of freedom (mean known to be 0).
        ratio = residual.pow(2).sum().item() / sigma**2
        assert stats.chi2.ppf(1e-6, m) < ratio < stats.chi2.ppf(1 - 1e-6, m)
        # Each coordinate mean is N(0, sigma^2 / n): within 5 standard errors.
        assert residual.mean(dim=0).abs().max().item() < 5 * sigma / math.sqrt(len(x))
        # Modes are uniform: each count is Binomial(n, 1/K), within 5 standard deviations.
        counts = torch.bincount(y, minlength=count).double()
        n = len(y)
        assert (counts - n / count).abs().max().item() < 5 * math.sqrt(n * (1 / count) * (1 - 1 / count))
    assert not torch.equal(data.train[: len(data.test)], data.test)


def test_toy_is_deterministic_per_seed(tmp_path):
    a, b, c = (Layout(tmp_path / k) for k in "abc")
    prepare_data(make_params(seed=3, name="grid25", n_train=2000, n_test=500), a)
    prepare_data(make_params(seed=3, name="grid25", n_train=2000, n_test=500), b)
    prepare_data(make_params(seed=4, name="grid25", n_train=2000, n_test=500), c)
    da, db, dc = (load_prepared(x.prepared) for x in (a, b, c))
    for key in ("train", "test", "train_labels", "test_labels"):
        assert getattr(da, key).numpy().tobytes() == getattr(db, key).numpy().tobytes()
    assert not torch.equal(da.train, dc.train) and not torch.equal(da.test, dc.test)
    # The test stream does not depend on n_train.
    d = Layout(tmp_path / "d")
    prepare_data(make_params(seed=3, name="grid25", n_train=1000, n_test=500), d)
    assert torch.equal(load_prepared(d.prepared).test, da.test)


# -- raw files ------------------------------------------------------------------------------------


def _corrupt(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("where", ["raw", "mirror"])
def test_corrupted_raw_file_is_named(tmp_path, mirror, monkeypatch, where):
    layout = Layout(tmp_path / "run")
    target = tmp_path / "mirror" if where == "mirror" else layout.raw
    shutil.copytree(mirror / "MNIST", target / "MNIST")
    _corrupt(target / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz")
    if where == "mirror":
        monkeypatch.setenv(DATASETS_ENV, str(tmp_path / "mirror"))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz") as err:
        prepare_data(make_params(name="mnist", n_train=10, n_test=10), layout)
    assert MNIST_MD5["train-labels-idx1-ubyte.gz"] in str(err.value)
    assert ("copied from" in str(err.value)) == (where == "mirror")
    assert not layout.prepared.exists()


def test_missing_mnist_without_network_names_the_files(tmp_path, monkeypatch):
    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    monkeypatch.setenv(DATASETS_ENV, str(empty))
    no_download(monkeypatch)
    layout = Layout(tmp_path / "run")
    with pytest.raises(DataError) as err:
        prepare_data(make_params(name="mnist", n_train=10, n_test=10), layout)
    message = str(err.value)
    for file, md5 in MNIST_MD5.items():
        assert file in message and md5 in message
    assert str(empty) in message and "network disabled by the test" in message
    assert not layout.prepared.exists()


def test_missing_cifar10_without_mirror_names_the_archive(tmp_path, monkeypatch):
    monkeypatch.delenv(DATASETS_ENV, raising=False)
    no_download(monkeypatch)
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz \(md5 c58f30108f718f92721af3b95e74349a\)") as err:
        prepare_data(make_params(name="cifar10", n_train=10, n_test=10), Layout(tmp_path))
    assert DATASETS_ENV in str(err.value)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar10_code_path_on_a_tiny_fake_archive(tmp_path, monkeypatch):
    """A 6-batch CIFAR-10 tarball with 4 images per batch, md5s patched to match: exercises the
    mirror copy, torchvision's checks and extraction, and the HWC -> CHW conversion."""
    rng = np.random.default_rng(0)
    build = tmp_path / "build" / "cifar-10-batches-py"
    build.mkdir(parents=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    batches = {}
    for name in names:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, 4).tolist()}
        (build / name).write_bytes(pickle.dumps(batch))
        batches[name] = batch
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (build / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(build, arcname="cifar-10-batches-py")
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, _md5(build / n)] for n in names[:5]])
    monkeypatch.setattr(cls, "test_list", [["test_batch", _md5(build / "test_batch")]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(build / "batches.meta")})
    monkeypatch.setattr(cls, "tgz_md5", _md5(mirror / "cifar-10-python.tar.gz"))
    monkeypatch.setenv(DATASETS_ENV, str(mirror))
    no_download(monkeypatch)

    layout = Layout(tmp_path / "run")
    summary = prepare_data(make_params(name="cifar10"), layout)
    assert summary["shape"] == "3x32x32" and summary["count"] == 20 and summary["count_test"] == 4
    data = load_prepared(layout.prepared)
    # CIFAR rows are 3072 = 3 x 32 x 32 channel-first bytes.
    expected = np.concatenate([batches[n]["data"] for n in names[:5]]).reshape(20, 3, 32, 32)
    assert np.array_equal(data.train.numpy(), expected)
    assert data.train_labels.tolist() == sum((batches[n]["labels"] for n in names[:5]), [])
    assert np.array_equal(data.test.numpy(), batches["test_batch"]["data"].reshape(4, 3, 32, 32))
    assert data.meta["modes"] == {"count": 10, "definition": "the 10 classes of cifar10", "labels": classes}
    assert data.meta["raw_sha256"] == {
        "cifar-10-python.tar.gz": hashlib.sha256((mirror / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    }


# -- the stage's outputs --------------------------------------------------------------------------


def test_domain_classifier_is_fitted_and_recorded(tmp_path, monkeypatch, mnist_raw):
    calls = []

    def fit_domain_classifier(data, params, directory):
        calls.append((data.meta["name"], len(data.train), directory))
        (Path(directory) / CLASSIFIER_FILE).write_bytes(b"weights")
        return {"file": CLASSIFIER_FILE, "test_accuracy": 0.97}

    fake = types.ModuleType("gancore.classifiers.domain")
    fake.fit_domain_classifier = fit_domain_classifier
    try:
        import gancore.classifiers  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "gancore.classifiers", types.ModuleType("gancore.classifiers"))
    monkeypatch.setitem(sys.modules, "gancore.classifiers.domain", fake)

    layout = shared_layout(tmp_path, mnist_raw)
    summary = prepare_data(make_params(name="mnist", n_train=20, n_test=10, classifier_epochs=2), layout)
    assert calls == [("mnist", 20, layout.prepared)]
    assert summary["classifier_test_accuracy"] == 0.97
    assert read_json(layout.prepared / META_FILE)["classifier"] == {"file": CLASSIFIER_FILE, "test_accuracy": 0.97}

    # Without epochs there is no classifier, and the one that described the old data is gone.
    prepare_data(make_params(name="mnist", n_train=20, n_test=10), layout)
    assert len(calls) == 1 and not (layout.prepared / CLASSIFIER_FILE).exists()
    assert "classifier" not in read_json(layout.prepared / META_FILE)
    assert (layout.prepared / DATA_FILE).exists()

    # 2D data get their exact posterior whatever the epochs.
    prepare_data(make_params(name="ring8", n_train=100, n_test=50), layout)
    assert calls[-1] == ("ring8", 100, layout.prepared)
