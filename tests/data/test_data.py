"""The prepare stage: 2D mixtures, torchvision image sets, Stacked MNIST, image folders, raw files."""

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
from PIL import Image
from scipy import stats
from torchvision.transforms.v2 import functional as F

from gancore.config import ParamsError, validate
from gancore.data import CLASSIFIER_FILE, DATA_FILE, META_FILE, load_prepared
from gancore.data.prepare import prepare_data
from gancore.data.raw import load_torchvision
from gancore.data.toy import grid25, ring8
from gancore.errors import DataError
from gancore.io import read_json
from gancore.layout import DATASETS_ENV, Layout
from helpers import REPO

MNIST_MD5 = dict(torchvision.datasets.MNIST.resources)


def make_params(seed: int = 0, **data):
    # No mixture: these tests are about the data; the partition has tests/test_mixture.py.
    return validate({"seed": seed, "data": {"classifier_epochs": 0, **data}, "mixture": {"enabled": False}}, check_plugins=False)


def find_mirror() -> Path | None:
    for candidate in (os.environ.get(DATASETS_ENV), REPO.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def mirror(monkeypatch) -> Path:
    path = find_mirror()
    if path is None:
        pytest.skip(f"no offline MNIST mirror ({DATASETS_ENV} unset and no ../shared/datasets)")
    monkeypatch.setenv(DATASETS_ENV, str(path))
    return path


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def mnist_raw(tmp_path_factory) -> Path:
    """One extracted copy of MNIST, shared by the tests that do not test fetching itself."""
    path = find_mirror()
    if path is None:
        pytest.skip("no offline MNIST mirror")
    raw = tmp_path_factory.mktemp("shared") / "raw"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATASETS_ENV, str(path))
        load_torchvision("mnist", raw)
    return raw


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def mnist_lookup(mnist_raw):
    """Image bytes -> set of MNIST labels, per split: to check every prepared image against its source."""
    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = torchvision.datasets.MNIST(str(mnist_raw), train=train)
        table: dict[bytes, set[int]] = {}
        for image, label in zip(ds.data.numpy(), ds.targets.tolist()):
            table.setdefault(image.tobytes(), set()).add(label)
        out[split] = table
    return out


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


# -- torchvision image sets -----------------------------------------------------------------------


def test_mnist_from_the_mirror(tmp_path, mirror, mnist_lookup):
    layout = Layout(tmp_path)
    summary = prepare_data(make_params(name="mnist", n_train=512, n_test=256), layout)
    assert summary["shape"] == "1x28x28" and summary["count"] == 512 and summary["count_test"] == 256
    data = load_prepared(layout.prepared)
    meta = read_json(layout.prepared / META_FILE)
    for key in ("name", "kind", "shape", "count", "count_test", "value_range", "storage", "seed", "modes", "raw_sha256"):
        assert key in meta, key
    assert meta["kind"] == "image" and meta["storage"] == "uint8" and meta["value_range"] == [-1.0, 1.0]
    assert meta["modes"]["count"] == 10 and len(meta["modes"]["labels"]) == 10
    assert data.train.shape == (512, 1, 28, 28) and data.train.dtype == torch.uint8
    assert data.test.shape == (256, 1, 28, 28)
    assert data.train_labels.min() >= 0 and data.train_labels.max() <= 9
    assert data.train.max() == 255 and data.train.min() == 0
    # Every image comes from its split, with its own label.
    for split, x, y in (("train", data.train, data.train_labels), ("test", data.test, data.test_labels)):
        for image, label in zip(x[:, 0].numpy(), y.tolist()):
            assert label in mnist_lookup[split][image.tobytes()]
    assert sorted(meta["raw_sha256"]) == sorted(f"MNIST/raw/{f}" for f in MNIST_MD5)
    for rel, sha in meta["raw_sha256"].items():
        assert sha == hashlib.sha256((layout.raw / rel).read_bytes()).hexdigest()
        assert sha == hashlib.sha256((mirror / rel).read_bytes()).hexdigest()
    assert not (layout.prepared / CLASSIFIER_FILE).exists()


def test_mnist_resize_and_subset_are_seeded(tmp_path, mnist_raw):
    native, big, again, other = (shared_layout(tmp_path / k, mnist_raw) for k in ("a", "b", "c", "d"))
    prepare_data(make_params(name="mnist", n_train=300, n_test=100), native)
    prepare_data(make_params(name="mnist", n_train=300, n_test=100, image_size=32), big)
    prepare_data(make_params(name="mnist", n_train=300, n_test=100, image_size=32), again)
    prepare_data(make_params(seed=1, name="mnist", n_train=300, n_test=100, image_size=32), other)
    a, b, c, d = (load_prepared(x.prepared) for x in (native, big, again, other))
    assert b.train.shape == (300, 1, 32, 32) and b.meta["shape"] == [1, 32, 32]
    assert torch.equal(b.train, F.resize(a.train, [32, 32], antialias=True))
    assert torch.equal(b.train_labels, a.train_labels)
    for key in ("train", "test", "train_labels", "test_labels"):
        assert getattr(b, key).numpy().tobytes() == getattr(c, key).numpy().tobytes()
    assert not torch.equal(b.train, d.train)


def test_subset_larger_than_the_split_is_a_parameter_error(tmp_path, mnist_raw):
    with pytest.raises(ParamsError, match="data.n_test"):
        prepare_data(make_params(name="mnist", n_train=10, n_test=10_001), shared_layout(tmp_path, mnist_raw))


def test_stacked_mnist_channels_are_the_labelled_digits(tmp_path, mnist_raw, mnist_lookup):
    layout = shared_layout(tmp_path, mnist_raw)
    summary = prepare_data(make_params(name="stacked_mnist", n_train=600, n_test=300), layout)
    assert summary["modes"] == 1000 and summary["shape"] == "3x28x28"
    data = load_prepared(layout.prepared)
    assert data.train.shape == (600, 3, 28, 28) and data.train.dtype == torch.uint8
    assert data.meta["modes"]["count"] == 1000
    for split, x, y in (("train", data.train, data.train_labels), ("test", data.test, data.test_labels)):
        assert y.min() >= 0 and y.max() <= 999
        for image, label in zip(x.numpy(), y.tolist()):
            digits = (label // 100, label // 10 % 10, label % 10)
            for channel, digit in zip(image, digits):
                assert digit in mnist_lookup[split][channel.tobytes()]
    # 600 draws of ~uniform triples: about 1000 (1 - e^-0.6) = 451 distinct; far from 1 or 600.
    assert 380 < len(set(data.train_labels.tolist())) < 520
    again = shared_layout(tmp_path / "again", mnist_raw)
    prepare_data(make_params(name="stacked_mnist", n_train=600, n_test=300), again)
    other = load_prepared(again.prepared)
    assert data.train.numpy().tobytes() == other.train.numpy().tobytes()
    assert torch.equal(data.test_labels, other.test_labels)
    # The digits are resized before stacking; that must equal resizing the stacked images.
    big = shared_layout(tmp_path / "big", mnist_raw)
    prepare_data(make_params(name="stacked_mnist", n_train=600, n_test=300, image_size=32), big)
    assert torch.equal(load_prepared(big.prepared).train, F.resize(data.train, [32, 32], antialias=True))


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


# -- image_folder ---------------------------------------------------------------------------------

WHITE = (255, 255, 255)


def _banded(color: tuple[int, int, int], portrait: bool, mode: str = "RGB") -> Image.Image:
    """48x32 (transposed when ``portrait``): ``color`` with 4-pixel black bands at the long sides,
    which the centre crop after resizing to 16 must remove, and a white top 8 rows, which only a
    resize (not a crop alone) keeps in view."""
    image = Image.new("RGB", (48, 32), (0, 0, 0))
    image.paste(color, (4, 0, 44, 32))
    image.paste(WHITE, (4, 0, 44, 8))
    if portrait:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    return image.convert(mode)


def _check_banded(image: torch.Tensor, color: torch.Tensor, tolerance: int) -> None:
    # Output row r averages source rows 2r-1 .. 2r+2 (bilinear, antialiased at scale 1/2), so rows
    # 0-2 see only white, rows 6-15 only the colour, and the crop's source columns 7..40 no band.
    assert (image[:, :3] - torch.tensor(WHITE)[:, None, None]).abs().max() <= tolerance
    assert (image[:, 6:] - color[:, None, None]).abs().max() <= tolerance


def test_image_folder_flat(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(20):
        _banded((10 * i + 5, 250 - 10 * i, 128), portrait=i % 2 == 1).save(folder / f"img{i:02d}.png")
    _banded((200, 200, 200), portrait=False, mode="L").save(folder / "gray.jpg", quality=100)
    (folder / "notes.txt").write_text("not an image")
    layout = Layout(tmp_path / "run")
    summary = prepare_data(make_params(name="image_folder", path=str(folder), image_size=16), layout)
    assert summary["modes"] == "unknown" and summary["count"] == 19 and summary["count_test"] == 2
    data = load_prepared(layout.prepared)
    assert data.train_labels is None and data.meta["modes"]["count"] is None
    assert data.meta["source"]["files"] == 21 and len(data.meta["source"]["sha256"]) == 64
    seen = []
    for x in (data.train, data.test):
        assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.uint8
        for image in x.int():
            color = image[:, 10, 8] if image[0, 0, 8] == 255 else image[:, 8, 10]
            index = 20 if color[0] == color[1] == color[2] else (color[0].item() - 5) // 10
            seen.append(index)
            portrait = index < 20 and index % 2 == 1
            # PNG is lossless: exact up to the resize's rounding; JPEG may move a value by a few.
            _check_banded(image.transpose(1, 2) if portrait else image, color, 1 if index < 20 else 3)
    assert sorted(seen) == list(range(21))
    again = Layout(tmp_path / "again")
    prepare_data(make_params(name="image_folder", path=str(folder), image_size=16), again)
    assert torch.equal(load_prepared(again.prepared).test, data.test)


def test_image_folder_with_class_folders(tmp_path):
    folder = tmp_path / "classes"
    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for name, count in (("cat", 3), ("dog", 4)):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            _banded(colours[name], portrait=False).save(folder / name / f"{i}.png")
    layout = Layout(tmp_path / "run")
    prepare_data(make_params(name="image_folder", path=str(folder), image_size=16, n_test=2), layout)
    data = load_prepared(layout.prepared)
    assert data.meta["modes"] == {"count": 2, "definition": "the 2 classes of classes", "labels": ["cat", "dog"]}
    assert len(data.train) == 5 and len(data.test) == 2
    for x, y in ((data.train, data.train_labels), (data.test, data.test_labels)):
        for image, label in zip(x, y.tolist()):
            _check_banded(image.int(), torch.tensor(colours[["cat", "dog"][label]]), 1)


def test_image_folder_refuses_mixed_and_empty_folders(tmp_path):
    mixed = tmp_path / "mixed"
    (mixed / "sub").mkdir(parents=True)
    _banded((1, 2, 3), False).save(mixed / "a.png")
    _banded((1, 2, 3), False).save(mixed / "sub" / "b.png")
    with pytest.raises(DataError, match="both directly"):
        prepare_data(make_params(name="image_folder", path=str(mixed), image_size=16), Layout(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        prepare_data(make_params(name="image_folder", path=str(tmp_path / "empty"), image_size=16), Layout(tmp_path))


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
