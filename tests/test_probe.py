"""gan probe: the discriminator's penultimate features under a linear probe, beside raw pixels and
a random discriminator, on MNIST and Fashion-MNIST (small, short runs: the numbers that matter are
in the note; here the protocol and its controls)."""

from __future__ import annotations

import json

import pytest
import torch

from gancore.cli import main
from gancore.data.prepared import to_model_range
from gancore.errors import GanCoreError
from gancore.probe import balanced_subset, features, last_layer, logistic_regression
from helpers import PARAMS, overrides

pytestmark = pytest.mark.xdist_group("probe")


@pytest.fixture(params=["mnist", "fashion_mnist"])
def trained(request, tmp_path_factory):
    import os
    from pathlib import Path

    mirror = os.environ.get("GANCORE_DATASETS_DIR")
    folder = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[request.param]
    if not mirror or not (Path(mirror) / folder).exists():
        pytest.skip(f"no {folder} mirror (GANCORE_DATASETS_DIR={mirror!r})")
    out = tmp_path_factory.mktemp(request.param)
    sets = [
        "-S",
        f"data.name={request.param}",
        "-S",
        "model.arch=dcgan",
        "-S",
        "model.latent_dim=32",
        "-S",
        "model.options.width=16",
        "-S",
        "data.n_train=2000",
        "-S",
        "data.n_test=1000",
        "-S",
        "data.classifier_epochs=0",
        "-S",
        "mixture.enabled=false",
        "-S",
        "train.steps=150",
        "-S",
        "train.batch_size=64",
        "-S",
        "train.lr_g=0.0002",
        "-S",
        "train.lr_d=0.0002",
        "-S",
        "train.monitor_every=null",
        "-S",
        "tracking.enabled=false",
        "-S",
        "probe.enabled=true",
        "-S",
        "probe.labels_per_class=[10, 100]",
    ]
    args = ["--params", str(PARAMS), "--out", str(out), *sets]
    assert main(["prepare", *args]) == 0 and main(["train", *args]) == 0
    return out, args


def test_probe_reports_the_discriminator_beside_pixels_and_a_random_discriminator(trained, capsys):
    out, args = trained
    assert main(["probe", *args]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "metrics" / "probe.json").read_text())
    assert result["enabled"] and result["test_examples"] == 1000
    # The last convolution sees 32 maps of 7x7, max-pooled to 4x4.
    assert result["feature_dim"] == {"discriminator": 32 * 4 * 4, "pixels": 784, "random": 32 * 4 * 4}
    for budget, labelled in (("10", 100), ("100", 1000)):
        accs = result["labels_per_class"][budget]
        assert accs["labelled_examples"] == labelled
        for space in ("discriminator", "pixels", "random"):
            assert 0.2 < accs[space] <= 1.0, (budget, space)  # well above chance (0.1) for every space
            assert f"{space}@{budget}" in printed
    # More labels never hurt a linear probe much: (1000 labels vs 100; 3 sd of a 1000-example test is 0.05)
    for space in ("discriminator", "pixels", "random"):
        assert result["labels_per_class"]["100"][space] >= result["labels_per_class"]["10"][space] - 0.05


def test_a_disabled_probe_says_how_to_enable_it(tmp_path, capsys):
    from helpers import make_layout

    make_layout(tmp_path)
    code = main(["probe", "--params", str(PARAMS), "--out", str(tmp_path), "-S", "probe.enabled=false", "-S", "tracking.enabled=false"])
    out = capsys.readouterr().out
    assert code == 0 and "set it to true (-S probe.enabled=true, with mixture.enabled=false)" in out
    assert json.loads((tmp_path / "metrics" / "probe.json").read_text())["enabled"] is False


def test_a_disabled_probe_keeps_an_earlier_result_and_says_so(tmp_path, capsys):
    """`gan probe` without probe.enabled overwrote minutes of probing with its note (a review)."""
    from helpers import make_layout

    make_layout(tmp_path)
    earlier = tmp_path / "metrics" / "probe.json"
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text('{"enabled": true, "labels_per_class": {"10": {"discriminator": 0.9}}}')
    code = main(["probe", "--params", str(PARAMS), "--out", str(tmp_path), "-S", "probe.enabled=false", "-S", "tracking.enabled=false"])
    out = capsys.readouterr().out
    assert code == 0 and "probe.enabled is false" in out and f"{earlier} keeps the probe made at " in out
    assert json.loads(earlier.read_text())["labels_per_class"]["10"]["discriminator"] == 0.9


def test_probe_needs_labels_and_says_so_with_exit_2(tmp_path, capsys):
    from gancore.data.prepared import PreparedData, save_prepared
    from gancore.layout import Layout

    layout = Layout(tmp_path)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    meta = {"name": "image_folder", "kind": "image", "shape": [3, 8, 8], "count": 32, "count_test": 8, "modes": {"count": None}}
    save_prepared(layout.prepared, PreparedData(meta, images[:32], images[32:]))
    code = main(
        [
            "probe",
            "--params",
            str(PARAMS),
            "--out",
            str(tmp_path),
            "-S",
            "probe.enabled=true",
            "-S",
            "data.name=image_folder",
            "-S",
            f"data.path={tmp_path}",
            "-S",
            "data.image_size=8",
            "-S",
            "mixture.enabled=false",
            "-S",
            "tracking.enabled=false",
        ]
    )
    assert code == 2 and "needs class labels" in capsys.readouterr().err
    assert not (tmp_path / "metrics" / "probe.json").exists()


@pytest.mark.parametrize("mixture", ["false", "true"])
def test_probe_beside_a_trained_mixture_names_what_is_wrong(tmp_path, capsys, mixture):
    """Under mixture.enabled=false it said, as a parameter error, to set mixture.enabled=false
    (a review): the mixture on disk is what stands in the way."""
    from gancore.data.prepared import PreparedData, save_prepared
    from gancore.layout import Layout

    layout = Layout(tmp_path)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40) % 2
    meta = {"name": "image_folder", "kind": "image", "shape": [3, 8, 8], "count": 32, "count_test": 8, "modes": {"count": 2}}
    save_prepared(layout.prepared, PreparedData(meta, images[:32], images[32:], labels[:32], labels[32:]))
    layout.models.mkdir(parents=True)
    layout.mixture.write_text("{}")  # what a mixture trained here leaves
    sets = ["probe.enabled=true", "data.name=image_folder", f"data.path={tmp_path}", "data.image_size=8", f"mixture.enabled={mixture}"]
    code = main(["probe", "--params", str(PARAMS), "--out", str(tmp_path), *overrides(*sets, "tracking.enabled=false")])
    err = capsys.readouterr().err
    if mixture == "false":
        assert code == 1 and f"{layout.models} holds a mixture of GANs ({layout.mixture}), one discriminator per part" in err
        assert "train a single GAN here first (`gan train -S mixture.enabled=false`)" in err
    else:
        assert code == 2 and "probe.enabled: the probe needs one discriminator" in err
    assert not (tmp_path / "metrics" / "probe.json").exists()


def test_logistic_regression_separates_separable_classes_and_subsets_are_balanced():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50, 3, generator=gen) + 4, torch.randn(50, 3, generator=gen) - 4])
    y = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    w, b, norm = logistic_regression(x, y, 2, 1e-3)
    assert (((x - norm[0]) / norm[1] @ w + b).argmax(1) == y).all()
    idx = balanced_subset(y, 7, seed=0)
    assert torch.bincount(y[idx]).tolist() == [7, 7]
    assert torch.equal(idx, balanced_subset(y, 7, seed=0))  # seeded


def test_features_come_from_the_input_of_the_last_layer():
    from gancore.modelio import build_pair

    _, d = build_pair("dcgan", (1, 28, 28), 8, {"width": 4})
    assert last_layer(d, torch.zeros(2, 1, 28, 28)) is d.net[-1]


@pytest.mark.parametrize(
    ("arch", "shape", "options"),
    [("resnet_sn", (3, 32, 32), {}), ("mlp", (2,), {"spectral_norm": True}), ("dcgan", (1, 28, 28), {"spectral_norm": True, "width": 4})],
)
def test_spectrally_normalised_discriminators_give_the_input_of_their_output_layer(arch, shape, options):
    """spectral_norm moves a layer's weight into a ParametrizationList, a module with parameters
    whose forward takes no input: taken as the last layer, it crashed the probe (IndexError) on
    resnet_sn and on every spectral_norm=true discriminator. The output layer applied to the
    features must give D's output (exactly so where the features are not pooled)."""
    from gancore.modelio import build_pair

    _, d = build_pair(arch, shape, 8, options)
    d.eval()
    x = torch.rand(6, *shape) * 2 - 1
    out = last_layer(d, x)
    assert not isinstance(out, torch.nn.utils.parametrize.ParametrizationList)
    images = ((x + 1) * 127.5).round().to(torch.uint8) if len(shape) == 3 else x
    feats = features(d, images, 1, torch.device("cpu"))
    assert feats.shape[0] == 6 and torch.isfinite(feats).all()
    if isinstance(out, torch.nn.Linear):
        with torch.no_grad():
            d_out = d(to_model_range(images)).reshape(6, -1)
            torch.testing.assert_close(out(feats).reshape(6, -1), d_out, rtol=1e-5, atol=1e-5)


class _DeclaredOutOfOrder(torch.nn.Module):
    """A plugin's discriminator that declares its output layer before the convolution feeding it."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4 * 4 * 4, 1)
        self.conv = torch.nn.Conv2d(1, 4, 4, stride=2, padding=1)

    def forward(self, x):
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 4).flatten(1))


def test_the_output_layer_is_the_last_to_run_not_the_last_declared():
    """Taken in declaration order, the conv was the 'last layer' and the probe read max-pooled raw
    pixels (16 values of a 1x28x28 image) as D's features, silently."""
    d = _DeclaredOutOfOrder()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert last_layer(d, x) is d.fc
    feats = features(d, ((x + 1) * 127.5).round().to(torch.uint8), 1, torch.device("cpu"))
    assert feats.shape == (3, 64)


def test_a_discriminator_without_weights_is_refused_in_words():
    with pytest.raises(GanCoreError, match="Identity has no layer with weights"):
        features(torch.nn.Identity(), torch.zeros(2, 3), 1, torch.device("cpu"))
