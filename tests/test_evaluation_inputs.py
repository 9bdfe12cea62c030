"""`gan evaluate` on inputs it refuses (missing, misshapen, too few or non-finite samples, another
data set), on data without a domain classifier (labelled: it names one to set; unlabelled images:
the pixels' principal components), and against the training split (papers' FID protocol)."""

from __future__ import annotations

import json

import pytest
import torch

from gancore.config import Params
from gancore.data.prepared import PreparedData, save_prepared
from gancore.errors import EvaluationError, ParamsError
from gancore.evaluation import evaluate
from gancore.layout import Layout
from helpers import image_meta
from ring_evaluation import K, make_ring8, read_result, ring_params, write_samples


@pytest.fixture
def ring_layout(tmp_path):
    return make_ring8(tmp_path, torch.randint(K, (200,), generator=torch.Generator().manual_seed(0)))


def test_missing_samples(ring_layout):
    with pytest.raises(EvaluationError, match=r"samples\.pt is missing: run `gan sample` first"):
        evaluate(ring_params(), ring_layout)


def test_shape_mismatch_names_both_shapes(ring_layout):
    write_samples(ring_layout, torch.zeros(100, 3))
    with pytest.raises(EvaluationError, match=r"shape \(3,\) but the prepared data 'ring8' have shape \(2,\)"):
        evaluate(ring_params(), ring_layout)


def test_fewer_samples_than_splits(ring_layout):
    write_samples(ring_layout, torch.zeros(5, 2))
    with pytest.raises(ParamsError, match=r"sample.n: 5 generated samples cannot fill evaluate.splits=10"):
        evaluate(ring_params(), ring_layout)


def test_fewer_samples_than_neighbours(ring_layout):
    write_samples(ring_layout, torch.zeros(12, 2))
    with pytest.raises(ParamsError, match=r"sample.n: 12 generated samples are too few for 20 nearest neighbours"):
        evaluate(ring_params(dc_k=20), ring_layout)


def test_a_training_split_too_small_for_the_faithful_baseline_is_named(ring_layout):
    """The training examples stand in for a faithful generator beside the k-NN metrics: a split of
    one example ended in a traceback ("real needs at least 4 rows") after the features were made."""
    from gancore.evaluation import _check_counts

    with pytest.raises(ParamsError, match=r"data.n_train: 3 examples of the other split are too few for 5 nearest neighbours"):
        _check_counts(ring_params(), 100, 3, 100)


def test_non_finite_samples(ring_layout):
    x = torch.zeros(100, 2)
    x[3, 1] = float("nan")
    write_samples(ring_layout, x)
    with pytest.raises(EvaluationError, match=r"1 of 100 generated samples contain NaN or inf"):
        evaluate(ring_params(), ring_layout)


def test_prepared_data_of_another_data_set(ring_layout):
    write_samples(ring_layout, torch.zeros(100, 2))
    with pytest.raises(EvaluationError, match=r"prepared data are 'ring8' but data.name is 'grid25'"):
        evaluate(Params(device="cpu", data={"name": "grid25"}), ring_layout)


def _no_classifier_layout(tmp_path, labelled: bool) -> tuple[Layout, torch.Tensor]:
    layout = Layout(tmp_path)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 2 if labelled else None
    reason = "data.classifier_epochs=0" if labelled else "image_folder has no class labels"
    meta = image_meta(
        "image_folder",
        [3, 8, 8],
        40,
        40,
        {"count": None, "definition": "none"},
        classifier={"kind": "none", "reason": reason, "test_accuracy": None},
    )
    save_prepared(layout.prepared, PreparedData(meta, images, images, labels, labels))
    return layout, images


def test_labelled_data_without_their_classifier_suggest_one(tmp_path):
    layout, images = _no_classifier_layout(tmp_path, labelled=True)
    write_samples(layout, images)
    params = Params(device="cpu", data={"name": "image_folder", "path": str(tmp_path), "image_size": 8})
    with pytest.raises(EvaluationError, match=r"evaluate.classifier=domain is not available.*set evaluate.classifier=inception") as err:
        evaluate(params, layout)
    assert "classifier_epochs > 0" in str(err.value)


def test_unlabelled_images_are_scored_in_pixel_components(tmp_path):
    """No labels, so no classifier can exist: the feature metrics use the pixels' principal
    components; identical images score as identical, and the class metrics are null with a note."""
    layout, images = _no_classifier_layout(tmp_path, labelled=False)
    write_samples(layout, images)
    params = Params(device="cpu", data={"name": "image_folder", "path": str(tmp_path), "image_size": 8})
    evaluate(params, layout)
    r = json.loads(layout.evaluate_json.read_text())
    assert r["feature_space"].startswith("pixels:pca") and r["is_mean"] is None and "no class labels" in r["probability_note"]
    assert r["fid"] == pytest.approx(0.0, abs=1e-6)
    # Samples = the real set, and the training set is the same 40 images: both sides agree exactly.
    assert r["precision"] == r["precision_faithful"] == 1.0 and r["coverage"] == r["coverage_faithful"]


def test_the_training_split_can_be_the_reference_as_in_papers_fid(tmp_path):
    """evaluate.reference=train compares with the training split (papers' FID: 50,000 samples
    against CIFAR-10's training set). Samples that are the training set itself then score FID 0
    and precision and recall 1, against the test split they do not; the provenance card names the
    split, so the two are never ranked together."""
    from gancore.data.prepared import load_prepared

    gen = torch.Generator().manual_seed(7)
    layout = make_ring8(tmp_path, torch.randint(K, (1000,), generator=gen))
    write_samples(layout, load_prepared(layout.prepared).train)
    evaluate(ring_params(reference="train", max_real=None), layout)
    on_train = read_result(layout)
    assert on_train["fid"] == pytest.approx(0.0, abs=1e-9) and on_train["precision"] == on_train["recall"] == 1.0
    assert on_train["provenance"]["reference_split"] == "ring8 training split" and on_train["n_real"] == 1000
    # the faithful scores then stand test examples in the samples' place, and say so (they said "training")
    assert on_train["faithful_reference"].startswith("1000 test examples in place of generated samples")
    evaluate(ring_params(max_real=None), layout)
    on_test = read_result(layout)
    assert on_test["fid"] > 1e-4 and on_test["provenance"]["reference_split"] == "ring8 test split"
    assert " training examples in place of generated samples" in on_test["faithful_reference"]


def test_the_pixel_space_does_not_follow_the_global_generator():
    """pca_lowrank draws its projection from the global generator: unseeded, the same seed gave FID
    7.698, 7.762 and 7.624 after three different global states (one process runs train and
    evaluate in a flow). The basis is a function of the data and the seed alone."""
    from types import SimpleNamespace

    from gancore.evaluation import PixelSpace

    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randn(2000, 3, 8, 8, generator=gen), size=16, mode="bilinear")
    train = (((smooth + 0.5 * torch.randn(2000, 3, 16, 16, generator=gen)).clamp(-3, 3) + 3) / 6 * 255).round().to(torch.uint8)
    bases = []
    for state in (1, 2):
        torch.manual_seed(state)
        bases.append(PixelSpace(SimpleNamespace(train=train), seed=0).basis)
    assert torch.equal(bases[0], bases[1])
