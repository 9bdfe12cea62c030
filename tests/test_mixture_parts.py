"""The mixture's parts in their own coordinates (whitened, or only scaled where a part has few
points per dimension; the map back exact), and the rows outside every cluster: a part of their
own where they are many, left in their clusters' parts where they are strays; and data kept whole
(one cluster, an image folder), whose one part trains as long as one GAN would."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gancore.layout import Layout
from gancore.mixture import MixtureGenerator
from helpers import PARAMS, cli_stages


def test_a_fitted_cluster_s_part_is_whitened_and_maps_back_exactly():
    """A part of a points file's cluster trains on its principal axes at unit spread (a thin tilted
    cluster scaled by one number was a line 0.07 wide, which part GANs drew at half that width:
    `intra_mode_collapse` on 4 of 5 seeds of benchmarks/collapse.py --data tilted, 5/5 healthy
    now). The map back is exact, the part's modes move with it (the same assignments and
    Mahalanobis distances), and the served mixture applies the same map."""
    from gancore.gaussian_mixture import GaussianMixture, mixture_from_modes
    from gancore.part_space import _affine, _normalised_meta, part_normalisation, to_data

    g = torch.Generator().manual_seed(0)
    along, across = 8 * torch.randn(3000, generator=g, dtype=torch.float64), 0.4 * torch.randn(3000, generator=g, dtype=torch.float64)
    x = torch.stack([along - across, along + across], 1) / math.sqrt(2) + torch.tensor([3.0, -1.0], dtype=torch.float64)
    shift, back = part_normalisation(x, whiten=True)
    forward = torch.linalg.inv(back)
    z = _affine(x, shift, forward)
    assert torch.allclose(torch.cov(z.T), torch.eye(2, dtype=torch.float64), atol=1e-9)  # round, unit spread
    record = {"shift": shift.tolist(), "scale": 1.0, "matrix": back.tolist()}
    assert torch.allclose(to_data(z, record), x, atol=1e-9)
    cov = torch.cov(x.T)[None]
    mixture = GaussianMixture(torch.ones(1, dtype=torch.float64), x.mean(0)[None], torch.diagonal(cov, dim1=1, dim2=2), 0.0, 0, cov)
    moved = mixture_from_modes(_normalised_meta({"modes": mixture.as_modes()}, shift, forward)["modes"])
    assert moved is not None
    assert torch.allclose(moved.squared_mahalanobis(z), mixture.squared_mahalanobis(x), rtol=1e-8)
    # known round modes (ring8's sigma is one number) are only scaled, as before
    shift_r, back_r = part_normalisation(x, whiten=False)
    assert torch.allclose(back_r, back_r[0, 0] * torch.eye(2, dtype=torch.float64))
    # the served mixture applies each part's matrix
    generator = torch.nn.Linear(2, 2).double()
    module = MixtureGenerator([generator], [1.0], [(shift.tolist(), back)]).double()
    w = torch.randn(50, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        # one part of weight 1: its first latent coordinate is re-drawn as itself (Phi^-1 Phi)
        out, expected = module(w.clone()), to_data(generator(w), record)
    assert torch.allclose(out, expected, atol=1e-6)


def test_a_mixture_pickled_with_one_scale_per_part_still_draws():
    """MLflow's registry holds the mixture pickled; one registered before parts had matrices has
    a `scales` buffer and no `matrices`, and failed at its first draw. It loads as the same map."""
    import io

    generator = torch.nn.Linear(2, 2)
    module = MixtureGenerator([generator], [1.0], [([1.0, -2.0], 3.0 * torch.eye(2))])
    z = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(z)
    del module._buffers["matrices"]  # the old layout
    module._buffers["scales"] = torch.tensor([3.0])
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    old = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.allclose(old(z), expected)
    assert "scales" not in dict(old.named_buffers())


def test_a_part_with_few_points_per_dimension_is_only_scaled():
    """Whitening by a covariance from few points stretches the axes it underestimates: 12 points
    in 10-D put held-out points at 5 times the training points' distance. Below ten points per
    dimension (plus one) a part keeps one scale."""
    from gancore.part_space import WHITEN_POINTS_PER_DIM, part_normalisation

    x = torch.randn(WHITEN_POINTS_PER_DIM * 11 - 1, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, back = part_normalisation(x, whiten=True)
    assert torch.allclose(back, back[0, 0] * torch.eye(10, dtype=torch.float64))
    _, back = part_normalisation(torch.cat([x, x[:1]]), whiten=True)
    assert not torch.allclose(back, back[0, 0] * torch.eye(10, dtype=torch.float64))


def _flat_beside_two_clusters(path, flat: float, n: int = 3000) -> str:
    """``flat`` of ``n`` rows uniform over a 30 x 30 box beside two clusters of sd 0.3, saved."""
    import numpy as np

    rng = np.random.default_rng(0)
    m = n - int(n * flat)
    clusters = [rng.normal(size=(m // 2, 2)) * 0.3, rng.normal(size=(m - m // 2, 2)) * 0.3 + (0, 20)]
    np.save(path, np.concatenate([rng.random((int(n * flat), 2)) * 30 - 5, *clusters]))
    return str(path)


def test_the_rows_outside_every_cluster_are_a_part_that_trains_as_long_as_one_gan(tmp_path):
    """Where the diagnosis tests the rows outside every cluster (a background of a tenth or more),
    they are a part of their own (in their clusters' parts, GANs left most of the box empty); a
    flat law is no unimodal problem, so the part trains train.steps. The mixture's log runs to
    its last step, the finished parts as they ended. No sample of the part is high quality, so
    train.keep_best keeps none there, and it samples its last generator (with mode_kl, undefined
    there, sample.generator=best failed; a review)."""
    from gancore import trainlog
    from gancore.config import load_params
    from gancore.data.prepared import load_prepared
    from gancore.gaussian_mixture import mixture_from_modes
    from gancore.mixture import part_steps, partition_info, plan_text
    from gancore.part_space import to_data
    from gancore.partition import part_steps_setting
    from gancore.sampling import sampled_generators
    from gancore.training import _outside_tested

    sets = [
        "data.name=points",
        f"data.path={_flat_beside_two_clusters(tmp_path / 'points.npy', 0.3)}",
        "mixture.steps=150",
        "train.steps=300",
        "train.batch_size=64",
        "train.monitor_every=75",
        "train.log_every=75",
        "train.checkpoint_every=75",
        "diagnose.ndb_bins=50",
        "train.keep_best=mode_kl",
        "sample.generator=best",
        "sample.n=500",
        "tracking.enabled=false",
        # PyTorch's initialisation: from He's (the mlp default) one cluster's part was judged
        # collapsed at both of its 150 steps' checks and kept no best for sample.generator=best
        "model.options.init=torch",
    ]
    layout = cli_stages(tmp_path / "run", sets)
    parts = partition_info(layout)["parts"]
    flat = [p for p in parts if p.get("background")]
    assert len(parts) == 3 and len(flat) == 1 and flat[0]["description"].startswith("the rows outside every cluster")
    modes = json.loads(layout.prepared_meta.read_text())["modes"]
    assert flat[0]["count"] == modes["outliers"]["rows"]
    own = load_prepared(layout.part(flat[0]["index"]).prepared)
    whole = mixture_from_modes(modes)
    assert whole is not None and bool(whole.outliers(to_data(own.train.double(), flat[0])).all())
    assert own.meta["own_test"] and bool(whole.outliers(to_data(own.test.double(), flat[0])).all())
    # the monitor tests the rows outside on the whole data (the run identity then counts
    # diagnose.ndb_bins), not in a part, whose modes carry no share outside
    assert _outside_tested(load_prepared(layout.prepared)) and not _outside_tested(own)
    last = {p["index"]: int(trainlog.read(layout.part(p["index"]).train_log)[-1]["step"]) for p in parts}
    assert [last[p["index"]] for p in parts] == [300 if p.get("background") else 150 for p in parts]
    rows = trainlog.read(layout.train_log)
    assert [int(r["step"]) for r in rows] == [75, 150, 225, 300]
    checked = rows
    assert all(r.get("monitor/outside_share") is not None and r.get("monitor/outside_short") in (0, 1) for r in checked)
    params = load_params(PARAMS, sets)
    assert plan_text(params, layout).endswith("each, the rows outside every cluster x 300, batch 64, mlp on cpu")
    assert not layout.part(flat[0]["index"]).best_models.exists()
    own = [layout.part(p["index"]) for p in parts]
    assert sampled_generators(params, layout) == [
        o.generator if p.get("background") else o.best_models / o.generator.name for o, p in zip(own, parts)
    ]
    assert part_steps(params) == 150 and part_steps(params, flat[0]) == 300
    # what a message past a part's steps names: the setting that decided them
    assert (part_steps_setting(params), part_steps_setting(params, flat[0])) == ("mixture.steps", "train.steps")
    for steps, expected, setting in (("500", 500, "mixture.steps"), ("null", 300, "train.steps")):  # the same for every part
        other = load_params(PARAMS, [*sets, f"mixture.steps={steps}"])
        assert part_steps(other) == part_steps(other, flat[0]) == expected
        assert part_steps_setting(other) == part_steps_setting(other, flat[0]) == setting


@pytest.mark.parametrize(("flat", "n", "pack"), [(0.04, 3000, 1), (0.15, 200, 16)])
def test_stray_rows_stay_in_their_clusters_parts(tmp_path, flat, n, pack):
    """Under a tenth of the rows outside every cluster are stray rows, which no generator need make
    (background.STRAY_ROWS_MAX): no part of their own. Nor are flat rows too few for a batch of
    two packed examples (27 rows, pack 16): folded, they all went to one cluster's part (a
    review); they stay in the parts of their most probable clusters."""
    from gancore.data.prepared import load_prepared
    from gancore.gaussian_mixture import mixture_from_modes
    from gancore.mixture import partition_info

    sets = ["data.name=points", f"data.path={_flat_beside_two_clusters(tmp_path / 'points.npy', flat, n)}", f"model.pack={pack}"]
    layout = cli_stages(tmp_path / "run", [*sets, "tracking.enabled=false"], ("prepare",))
    parts = partition_info(layout)["parts"]
    assert len(parts) == 2 and not any(p.get("background") for p in parts)
    data = load_prepared(layout.prepared)
    whole = mixture_from_modes(data.meta["modes"])
    assert whole is not None
    outside = whole.outliers(data.train)
    assert (whole.noise >= 0.1) is (pack > 1) and int(outside.sum()) >= (20 if pack > 1 else 100)
    # each in the part of its most probable cluster: the parts are prepare's clusters, and both hold rows outside
    assert data.train_labels is not None
    assert [p["count"] for p in parts] == torch.bincount(data.train_labels).tolist()
    assert all(int(((data.train_labels == c) & outside).sum()) > 0 for c in range(2))


@pytest.mark.slow
def test_the_sole_part_of_data_with_one_cluster_trains_as_one_gan(tmp_path):
    """Data with one cluster make a mixture of one part: the whole data, which mixture.enabled=false
    would train train.steps, not mixture.steps. From mixture.steps=1,000 of PyTorch's initialisation,
    a 10-D Gaussian's generator came out a line (nine of ten variances 0.00); with 1,000 steps from
    the mlp generator's He initialisation its smallest variance was 0.15 to 0.24 (two seeds) of the
    data's. Both fail here: 50 steps leave every variance below 0.01, PyTorch's start below 0.003."""
    import numpy as np

    from gancore import trainlog
    from gancore.config import load_params
    from gancore.diagnostics import remedy_context
    from gancore.diagnostics.remedies import plan
    from gancore.mixture import part_steps, partition_info, plan_text

    rng = np.random.default_rng(0)
    np.save(tmp_path / "gauss.npy", rng.normal(size=(3000, 10)) * rng.uniform(0.5, 2.0, 10) + 3.0)
    sets = [
        "data.name=points",
        f"data.path={tmp_path / 'gauss.npy'}",
        "mixture.steps=50",
        "train.steps=1000",
        "train.monitor_every=null",
        "train.checkpoint_every=1000",
        "train.log_every=100",
        "sample.n=2000",
        "tracking.enabled=false",
    ]
    layout = cli_stages(tmp_path / "run", sets)
    params = load_params(PARAMS, sets)
    (part,) = partition_info(layout)["parts"]
    assert part_steps(params, part, whole=True) == 1000 and part_steps(params, part) == 50
    assert plan_text(params, layout).startswith("plan: one GAN (clusters, count chosen by BIC) x 1000 steps, ")
    assert int(trainlog.read(layout.part(0).train_log)[-1]["step"]) == 1000
    # "train longer" lengthens train.steps, which the sole part trains
    context = remedy_context(params, {}, layout)
    assert (context["steps_key"], context["steps"]) == ("train.steps", 1000)
    assert context["partition_method"] == "kmeans" and context["mixture_parts"] == 1  # splitting by clusters is no remedy
    assert "mixture" not in [r.name for r in plan(["intra_mode_collapse"], "non_saturating", None, context)]
    # the samples spread over every direction of the (standardised) data: a generator's variances,
    # each a few percent off from 2,000 samples, against the data's 1.0
    x = torch.load(layout.samples_file)["x"].double()
    variances = torch.linalg.eigvalsh(torch.cov(x.T))
    assert variances.min() > 0.05 and variances.max() < 5, variances


def test_an_image_folder_kept_whole_trains_mixture_steps(tmp_path):
    """Images are not split under partition auto (method none): that one part is the quick first
    run of an image folder (mixture.steps), not data found to be one cluster (train.steps)."""
    from gancore.config import load_params
    from gancore.errors import DataError
    from gancore.io import write_json
    from gancore.mixture import part_steps, partition_info, plan_text
    from gancore.partition import one_cluster

    part = {"index": 0, "count": 3000, "description": "the whole data set"}
    assert not one_cluster({"method": "none", "parts": [part]})
    assert one_cluster({"method": "kmeans", "parts": [part]}) and one_cluster({"method": "labels", "parts": [part]})
    assert not one_cluster({"method": "kmeans", "parts": [part, {**part, "index": 1}]})
    layout = Layout(tmp_path)
    layout.prepared.mkdir(parents=True)
    settings = {"partition": "auto", "parts": "auto", "max_parts": 50}
    write_json(layout.prepared / "mixture.json", {"method": "none", "settings": settings, "parts": [part]})
    params = load_params(PARAMS, ["device=cpu"])
    assert part_steps(params) == params.mixture.steps == 1000 and params.train.steps == 5000
    # (these parameters' ring8 is no image folder: no setting differs, and training's data check says so)
    assert plan_text(params, layout).startswith(
        "plan: one GAN (the whole data set: images are not split under partition auto) x 1000 steps, "
    )
    # images kept whole: max_parts does not matter to them, a part count does (k-means splits them)
    images = ["device=cpu", "data.name=mnist", "model.arch=dcgan"]
    assert partition_info(layout, load_params(PARAMS, [*images, "mixture.max_parts=10"]))["method"] == "none"
    with pytest.raises(DataError, match='other settings \\(mixture.parts: "auto" then, 4 now\\)'):
        partition_info(layout, load_params(PARAMS, [*images, "mixture.parts=4"]))
    # and the remedy for its collapse splits it by clusters, which data found to be one cluster are not offered
    from gancore.diagnostics import remedy_context
    from gancore.diagnostics.remedies import plan

    layout.models.mkdir()
    write_json(layout.mixture, {"method": "none", "parts": [part]})  # the trained mixture's manifest
    context = remedy_context(params, {}, layout)
    assert context["partition_method"] == "none" and context["mixture_parts"] == 1
    assert plan(["partial_collapse"], "non_saturating", None, context)[0].sets == ("mixture.partition=kmeans",)
