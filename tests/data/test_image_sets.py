"""The prepare stage on image sets: torchvision's MNIST from the mirror (resized, subset, seeded),
Stacked MNIST, and image folders (flat or one folder per class)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2 import functional as F

from gancore.config import ParamsError, validate
from gancore.data import CLASSIFIER_FILE, META_FILE, load_prepared
from gancore.data.prepare import prepare_data
from gancore.errors import DataError
from gancore.io import read_json
from gancore.layout import Layout

MNIST_MD5 = dict(torchvision.datasets.MNIST.resources)


def make_params(seed: int = 0, **data):
    # No mixture: these tests are about the data; the partition has tests/test_mixture.py.
    return validate({"seed": seed, "data": {"classifier_epochs": 0, **data}, "mixture": {"enabled": False}}, check_plugins=False)


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
