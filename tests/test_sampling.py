"""Sampling: fixed-seed samples in the brief's storage convention, and a valid picture."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gancore import training
from gancore.config import validate
from gancore.data.prepared import PreparedData, save_prepared
from gancore.errors import GanCoreError
from gancore.layout import Layout
from gancore.sampling import SAMPLE_STREAM, load_samples, sample
from helpers import image_meta, ring8_centers

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CENTERS = ring8_centers()


def _params(data: dict, model: dict, n: int, **sample_opts):
    return validate(
        {
            "seed": 1,
            "device": "cpu",
            "data": data,
            "model": model,
            "train": {"steps": 2, "batch_size": 16, "log_every": 1},
            "sample": {"n": n, "batch_size": 48, **sample_opts},
            "evaluate": {"splits": 2},
            "tracking": {"enabled": False},
        }
    )


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def ring_run(tmp_path_factory):
    layout = Layout(tmp_path_factory.mktemp("ring"))
    gen = torch.Generator().manual_seed(0)
    train = torch.tensor(CENTERS)[torch.randint(8, (64,), generator=gen)] + 0.05 * torch.randn(64, 2, generator=gen)
    meta = {
        "name": "ring8",
        "kind": "vector",
        "shape": [2],
        "count": 48,
        "count_test": 16,
        "value_range": [-1, 1],
        "storage": "float32",
        "seed": 0,
        "modes": {"count": 8, "definition": "nearest centre", "centers": CENTERS, "sigma": 0.05},
        "raw_sha256": {},
    }
    save_prepared(layout.prepared, PreparedData(meta, train[:48], train[48:]))
    params = _params({"name": "ring8", "n_train": 48, "n_test": 16}, {"arch": "mlp", "latent_dim": 3, "options": {"hidden": 8}}, n=100)
    training.train(params, layout)
    return params, layout


def test_vector_samples_are_seeded_counted_and_pictured(ring_run):
    params, layout = ring_run
    summary = sample(params, layout)
    assert summary["n"] == 100 and summary["shape"] == [2]  # 100 = 48 + 48 + 4: a partial last batch
    stored = torch.load(layout.samples / "samples.pt", weights_only=True)
    assert stored["x"].dtype == torch.float32 and stored["x"].shape == (100, 2)
    assert (stored["seed"], stored["stream"], stored["latent_dim"]) == (params.seed, SAMPLE_STREAM, 3)
    assert torch.isfinite(stored["x"]).all()
    assert torch.equal(load_samples(layout), stored["x"])

    picture = layout.samples / "samples.png"
    assert summary["picture"] == str(picture)
    assert picture.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(picture) as im:
        im.verify()

    sample(params, layout)
    assert torch.equal(torch.load(layout.samples / "samples.pt", weights_only=True)["x"], stored["x"])
    other = validate({**params.model_dump(), "seed": 2})
    sample(other, layout)
    assert not torch.equal(load_samples(layout), stored["x"])
    assert not list(layout.root.rglob("*.tmp"))


def test_generator_of_another_shape_is_refused(ring_run):
    params, layout = ring_run
    wrong = validate({**params.model_dump(), "data": {"name": "mnist", "n_train": 48}})
    with pytest.raises(GanCoreError, match=r"shape \[2\].*\[1, 28, 28\].*gan train"):
        sample(wrong, layout)


def test_image_samples_are_uint8_and_pictured_as_a_grid(tmp_path):
    layout = Layout(tmp_path)
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    meta = image_meta("mnist", [1, 28, 28], 32, 8, {"count": 10, "definition": "digit class"})
    save_prepared(layout.prepared, PreparedData(meta, images[:32], images[32:]))
    params = _params(
        {"name": "mnist", "n_train": 32, "n_test": 8}, {"arch": "dcgan", "latent_dim": 8, "options": {"width": 4}}, n=20, grid_size=16
    )
    training.train(params, layout)
    summary = sample(params, layout)
    assert summary["n"] == 20 and summary["shape"] == [1, 28, 28]
    stored = torch.load(layout.samples / "samples.pt", weights_only=True)["x"]
    assert stored.dtype == torch.uint8 and stored.shape == (20, 1, 28, 28)
    x = load_samples(layout)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    with Image.open(layout.samples / "samples.png") as im:
        # 16 images in a 4 x 4 grid, 28 px each with make_grid's 2 px padding around every cell.
        assert im.format == "PNG" and im.size == (4 * 30 + 2, 4 * 30 + 2)


def test_missing_generator_says_to_train_first(tmp_path):
    params = _params({"name": "ring8"}, {"arch": "mlp"}, n=10)
    with pytest.raises(GanCoreError, match="generator.pt is missing: run `gan train` first"):
        sample(params, Layout(tmp_path))
    with pytest.raises(GanCoreError, match="samples.pt is missing"):
        load_samples(Layout(tmp_path))


def test_a_mixture_s_samples_pick_their_parts_at_random():
    """Each sample picks its part with probability its weight (multinomial counts), as the served
    mixture does: mean n w and variance n w (1 - w) over seeds (400 draws: the mean within 4 s.e.,
    the variance within 25 %, about 3.5 s.e. of a sample variance of 400), not the expected shares."""
    import torch

    from gancore.sampling import allocate, part_counts

    n, weights = 800, [0.5, 0.3, 0.15, 0.05]
    draws = torch.tensor([part_counts(n, weights, torch.Generator().manual_seed(s)) for s in range(400)], dtype=torch.float64)
    assert (draws.sum(1) == n).all()
    w = torch.tensor(weights, dtype=torch.float64)
    var = n * w * (1 - w)
    assert ((draws.mean(0) - n * w).abs() <= 4 * (var / 400).sqrt()).all()
    assert ((draws.var(0) / var - 1).abs() < 0.25).all()
    assert sum(d.tolist() == allocate(n, weights) for d in draws) < 40  # rarely the expected shares
    assert part_counts(0, weights, torch.Generator()) == [0, 0, 0, 0]


def test_a_diverged_generator_s_samples_are_refused_not_stored(ring_run, tmp_path):
    """NaN became black pixels (0) and inf white ones when stored, and evaluate's NaN check could
    never fire on them (found by a review). A generator with NaN weights: one line, nothing written."""
    import shutil

    params, layout = ring_run
    copy = Layout(tmp_path / "run")
    shutil.copytree(layout.root / "data", copy.root / "data")
    shutil.copytree(layout.root / "models", copy.root / "models")
    record = torch.load(copy.generator, weights_only=True)
    first = next(iter(record["state_dict"]))
    record["state_dict"][first] = torch.full_like(record["state_dict"][first], float("nan"))
    torch.save(record, copy.generator)
    with pytest.raises(GanCoreError, match=r"100 of 100 samples hold NaN or infinite values: the generator diverged"):
        sample(params, copy)
    assert not copy.samples_file.exists()
