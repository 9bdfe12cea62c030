"""The mixture of GANs: partition, one GAN per part, sampling in proportion, one model to serve;
through the CLI (what dvc repro runs) and through the gan-mixture flow (parts in parallel)."""

from __future__ import annotations

import json
import math

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from gancore.cli import main
from gancore.layout import Layout
from gancore.mixture import MixtureGenerator, load_mixture_generator, mean_log
from helpers import PARAMS

MIXTURE = [
    "data.n_train=2000",
    "data.n_test=1000",
    "mixture.enabled=true",
    "mixture.steps=150",
    "train.batch_size=128",
    "train.checkpoint_every=75",
    "train.log_every=25",
    "train.monitor_every=75",
    "sample.n=800",
    "evaluate.max_real=1000",
    "diagnose.ndb_bins=20",
    "tracking.enabled=false",
]


def run_stages(out, sets: list[str], stages=("prepare", "train", "sample")) -> Layout:
    """``stages`` by the CLI into ``out``, each with ``-S`` ``sets``; their layout."""
    for stage in stages:
        assert main([stage, "--params", str(PARAMS), "--out", str(out), *[a for s in sets for a in ("-S", s)]]) == 0, stage
    return Layout(out)


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def cli_mixture(tmp_path_factory):
    return run_stages(tmp_path_factory.mktemp("mixture"), MIXTURE, ("prepare", "train", "sample", "evaluate", "diagnose"))


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_the_data_s_eight_clusters_are_found_and_each_part_trains_normalised(cli_mixture):
    layout = cli_mixture
    info = json.loads((layout.prepared / "mixture.json").read_text())
    # mixture.parts: auto, the default: nobody told it the ring has 8 modes.
    assert info["method"] == "kmeans" and len(info["parts"]) == 8 and info["chosen_by"] == "bic"
    selection = info["selection"]
    assert selection["chosen"] == 8 and selection["k"][0] == 1 and min(selection["bic"]) == selection["bic"][7]
    assert json.loads(layout.prepared_meta.read_text())["mixture"]["parts"] == 8
    assert (layout.prepared / "parts_selection.png").stat().st_size > 1000
    assert sum(p["count"] for p in info["parts"]) == 2000
    centers = torch.tensor(json.loads(layout.prepared_meta.read_text())["modes"]["centers"])
    shifts = torch.tensor([p["shift"] for p in info["parts"]])
    # Every part sits on one of the ring's centres (sigma 0.01: its mean within a few 1e-3).
    assert torch.cdist(shifts, centers.float()).min(dim=1).values.max() < 5e-3
    assert len(set(torch.cdist(shifts, centers.float()).argmin(dim=1).tolist())) == 8
    for p in info["parts"]:
        part = layout.part(p["index"])
        data = torch.load(part.prepared_data, weights_only=True)["train"]
        assert data.shape == (p["count"], 2)
        assert data.mean(0).abs().max() < 1e-5 and data.pow(2).mean().sqrt() == pytest.approx(1.0, abs=1e-5)
        assert part.generator.is_file() and part.train_log.is_file()
        assert json.loads(part.prepared_meta.read_text())["own_test"] is True  # held-out points of its own


@pytest.mark.xdist_group("mixture-cli")
def test_a_partition_made_under_other_settings_is_refused_before_training(cli_mixture):
    """``gan train -S mixture.parts=4`` on data prepared with parts: auto trained the 8 prepared
    parts and called them BIC's; settings with the same effect (partition kmeans for vectors)
    pass, and so does one GAN on the whole data."""
    from gancore.config import load_params
    from gancore.errors import DataError
    from gancore.mixture import partition_info, plan_text

    info = partition_info(cli_mixture)
    assert info["settings"] == {"partition": "auto", "parts": "auto", "max_parts": 50, "pack": 1}
    assert sum(info["sizes"]) == 2000 and len(info["sizes"]) == 8
    for sets, differ in (
        (["mixture.parts=4"], 'mixture.parts: "auto" then, 4 now'),
        (["mixture.max_parts=10"], "mixture.max_parts: 50 then, 10 now"),
        (
            ["mixture.partition=kmeans", "mixture.parts=3"],
            'mixture.partition: "auto" then, "kmeans" now; mixture.parts: "auto" then, 3 now',
        ),
    ):
        params = load_params(PARAMS, MIXTURE + sets)
        with pytest.raises(DataError, match=f"mixture.json was made under other settings \\({differ}\\): run `gan prepare`"):
            plan_text(params, cli_mixture)
    same = load_params(PARAMS, MIXTURE + ["mixture.partition=kmeans", "mixture.steps=7"])
    assert partition_info(cli_mixture, same) == info and " x 7 steps each" in plan_text(same, cli_mixture)
    # another model.pack matters only where it folds a cluster the other did not (below 2 x pack rows)
    packed = load_params(PARAMS, MIXTURE + ["model.pack=4"])
    assert partition_info(cli_mixture, packed) == info  # ring8's clusters have ~250 rows: none folds under 8
    from gancore.mixture import _other_settings

    small = {**info, "sizes": [3, 7, *info["sizes"]]}  # (3 rows fold under pack 2 and 4; 7 under 4 alone)
    assert _other_settings(packed, small) == ["model.pack: 1 then, 4 now, which folds clusters of 3, 7 rows otherwise"]
    pack2 = load_params(PARAMS, MIXTURE + ["model.pack=2"])
    assert _other_settings(pack2, {**info, "sizes": [7, *info["sizes"]]}) == []
    assert plan_text(load_params(PARAMS, MIXTURE + ["mixture.enabled=false", "mixture.parts=4"]), cli_mixture).startswith("plan: one GAN")


def test_gan_train_refuses_a_partition_made_under_other_settings_and_trains_nothing(tmp_path, capsys):
    """The refusal as a user meets it: ``gan train`` after ``gan prepare`` with another part count
    exits 1 with the settings named, before any part trains; prepare with them, and it trains."""
    sets = ["data.n_train=400", "data.n_test=200", "mixture.steps=2", "train.batch_size=32", "tracking.enabled=false"]
    layout = run_stages(tmp_path, sets, ("prepare",))
    capsys.readouterr()
    assert (
        main(["train", "--params", str(PARAMS), "--out", str(tmp_path), *[a for s in [*sets, "mixture.parts=3"] for a in ("-S", s)]]) == 1
    )
    err = capsys.readouterr().err
    assert 'mixture.json was made under other settings (mixture.parts: "auto" then, 3 now): run `gan prepare`' in err
    assert not layout.models.exists() and not layout.part(0).generator.exists()
    run_stages(tmp_path, [*sets, "mixture.parts=3"], ("prepare", "train"))
    assert json.loads(layout.mixture.read_text())["parts"][2]["index"] == 2 and not layout.part(3).generator.exists()


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_samples_follow_the_part_sizes_and_every_mode_is_reached(cli_mixture):
    layout = cli_mixture
    manifest = json.loads(layout.mixture.read_text())
    weights = [p["weight"] for p in manifest["parts"]]
    assert sum(weights) == pytest.approx(1.0)
    saved = torch.load(layout.samples_file, weights_only=True)
    samples = saved["x"]
    assert samples.shape == (800, 2)
    # drawn from every part's generator, each recorded by its bytes (evaluate and diagnose compare them)
    from gancore.io import file_digest

    assert saved["drawn_from"] == {
        f"models/parts/part{i:02d}/generator.pt": file_digest(layout.part(i).generator) for i in range(len(manifest["parts"]))
    }
    diagnosis = json.loads(layout.diagnose_json.read_text())
    # Each part is one Gaussian: after 150 steps per part the mixture already sits on the modes...
    assert diagnosis["modes_covered"] == 8 and diagnosis["high_quality_fraction"] > 0.9
    assert diagnosis["mode_kl"] < 0.05
    # ...but its parts are still narrower than their Gaussians (measured: dispersion 0.77, coverage
    # 0.62 against 0.985 for training examples), which is collapse inside the modes, not healthy.
    assert diagnosis["verdict"] in ("healthy", "intra_mode_collapse")
    if diagnosis["verdict"] == "intra_mode_collapse":
        narrow = diagnosis["dispersion_ratio"] < 0.9
        covers_less = diagnosis["evaluate_coverage"] < 0.8 * diagnosis["evaluate_coverage_faithful"]
        assert narrow or covers_less
    assert "mixture" not in [r["name"] for r in diagnosis["remedy_settings"]]  # already one


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_the_mixture_s_log_carries_its_own_monitor_figures(cli_mixture):
    """The parts' monitors see one mode each; the mixture's log (and so its MLflow run) holds the
    monitor's figures for the mixture's own samples, and its progress pictures."""
    from gancore import trainlog

    rows = {int(r["step"]): r for r in trainlog.read(cli_mixture.train_log)}
    assert rows[150]["monitor/modes_covered"] == 8 and rows[150]["monitor/high_quality_fraction"] > 0.9
    assert rows[75]["monitor/modes_covered"] > 1
    part_rows = {int(r["step"]): r for r in trainlog.read(cli_mixture.part(0).train_log)}
    assert part_rows[150]["monitor/modes_covered"] == 1  # what the parent showed before
    assert (cli_mixture.progress / "step_000150.png").stat().st_size > 500


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_the_mixture_is_one_generator_that_picks_parts_by_weight(cli_mixture):
    module, record = load_mixture_generator(cli_mixture)
    assert isinstance(module, MixtureGenerator) and record["parts"] == 8
    z = torch.randn(20000, record["latent_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = module(z)
    centers = torch.tensor(json.loads(cli_mixture.prepared_meta.read_text())["modes"]["centers"]).float()
    shares = torch.bincount(torch.cdist(x, centers).argmin(dim=1), minlength=8).double() / len(x)
    manifest = json.loads(cli_mixture.mixture.read_text())
    # Parts are picked with probability = weight: binomial s.d. of a share <= sqrt(.25/20000) = 0.0035.
    expected = torch.zeros(8, dtype=torch.float64)
    shifts = torch.tensor([p["shift"] for p in manifest["parts"]]).float()
    for part, mode in zip(manifest["parts"], torch.cdist(shifts, centers).argmin(dim=1).tolist()):
        expected[mode] += part["weight"]
    assert torch.allclose(shares, expected, atol=5 * 0.0035)


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_a_part_too_light_for_one_sample_gets_none(cli_mixture, tmp_path):
    """Largest remainders give a part of weight under 1/n no sample; its empty draw is skipped
    (it was a 1-D empty tensor that the part's shift could not broadcast with)."""
    import shutil

    from gancore.config import load_params
    from gancore.sampling import draw_samples

    layout = Layout(tmp_path / "run")
    shutil.copytree(cli_mixture.root, layout.root)
    manifest = json.loads(layout.mixture.read_text())
    manifest["parts"][0]["weight"] = 1e-6
    layout.mixture.write_text(json.dumps(manifest))
    x, record = draw_samples(load_params(PARAMS, MIXTURE), layout, torch.device("cpu"))
    assert x.shape == (800, 2) and record["mixture_counts"][0] == 0 and sum(record["mixture_counts"]) == 800


def test_mean_log_averages_every_step_a_finished_part_as_it_ended():
    """The rows outside every cluster train longer than the clusters' parts: past a part's last
    step, its last row stands for it."""
    logs = [[{"step": 1, "loss_d": 1.0}, {"step": 2, "loss_d": 3.0}], [{"step": 1, "loss_d": 2.0}]]
    assert mean_log(logs) == [{"step": 1, "loss_d": 1.5}, {"step": 2, "loss_d": 2.5}]
    # a step before a part's first row has no mixture yet
    assert mean_log([[{"step": 2, "loss_d": 1.0}], [{"step": 1, "loss_d": 2.0}]]) == [{"step": 2, "loss_d": 1.5}]


def test_gan_mixture_flow_trains_parts_in_parallel_under_one_parent_run(prefect_harness, project):
    from gancore_flows.mixture import gan_mixture

    state = gan_mixture(return_state=True, params_file=str(project / "params.yaml"), sets=["mixture.steps=60", "train.monitor_every=30"])
    assert state.is_completed(), state
    result = state.result()
    parent = MlflowClient().get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["mixture.parts"] == "8"
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        output_format="list",
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    assert sorted(c.data.tags["mixture.part"] for c in children) == [str(i) for i in range(8)]
    assert all(c.info.status == "FINISHED" and c.data.metrics["weight"] > 0 for c in children)
    assert len(MlflowClient().get_metric_history(children[0].info.run_id, "train/loss_d")) > 0
    # The parent's monitor curve is the mixture's own (its parts each cover one mode of eight).
    parent_modes = MlflowClient().get_metric_history(parent.info.run_id, "monitor/modes_covered")
    child_modes = MlflowClient().get_metric_history(children[0].info.run_id, "monitor/modes_covered")
    assert [m.step for m in parent_modes] == [30, 60] and max(m.value for m in parent_modes) > 1
    assert all(m.value <= 1 for m in child_modes)
    # The mixture is registered as one model, and serves through MLflow's generic interface.
    version = parent.data.tags["model.version"]
    predicted = mlflow.pyfunc.load_model(f"models:/gancore-ring8-mlp/{version}").predict(torch.randn(5, 16).numpy())
    assert predicted.shape == (5, 2)
    assert result["diagnose"]["modes_total"] == 8


def test_class_labels_are_never_the_default_split():
    """Class labels are the modes the mode count scores: a default split by labels handed the
    metric its answer (MNIST's 10 parts, Stacked MNIST's 1,000). Images are one part under auto,
    k-means when a count is asked for; labels only when asked for, and then with no count."""
    from gancore.config import validate
    from gancore.data.prepared import PreparedData
    from gancore.diagnostics.remedies import plan
    from gancore.errors import ParamsError
    from gancore.partition import partition_method
    from helpers import image_meta

    images = torch.zeros(20, 1, 28, 28, dtype=torch.uint8)
    labelled = PreparedData(image_meta("mnist", [1, 28, 28], 20, 0, {"count": 10}), images, images[:0], torch.arange(20) % 10, None)

    def method(**mixture) -> str:
        return partition_method(validate({"data": {"name": "mnist"}, "mixture": mixture}, check_plugins=False), labelled)

    assert method() == "none"
    assert method(parts=3) == "kmeans"
    assert method(partition="labels") == "labels"
    with pytest.raises(ParamsError, match="labels make one part per class"):
        validate({"data": {"name": "mnist"}, "mixture": {"partition": "labels", "parts": 3}}, check_plugins=False)
    # the mixture remedy of a collapsed image GAN splits it by k-means, not into one part
    remedy = next(r for r in plan(["partial_collapse"], "non_saturating", None, {"kind": "image"}) if r.name == "mixture")
    assert remedy.sets == ("mixture.enabled=true", "mixture.partition=kmeans")


def test_parts_too_small_for_a_batch_of_two_are_refused_before_any_trains():
    """A one-example cluster (an outlier) trained with batch 1, where a batch-normalised G fails
    ("Expected more than 1 value per channel"), after the parts before it had trained."""
    from gancore.config import validate
    from gancore.errors import ParamsError
    from gancore.mixture import check_part_sizes

    parts = [{"index": 0, "description": "cluster 0", "count": 500}, {"index": 1, "description": "cluster 1", "count": 3}]
    check_part_sizes(validate({}, check_plugins=False), parts)
    with pytest.raises(ParamsError, match=r"part 1 \(cluster 1: 3\) has fewer examples than a batch of 2 x model.pack=2"):
        check_part_sizes(validate({"model": {"pack": 2}}, check_plugins=False), parts)
    with pytest.raises(ParamsError, match=r"part 1 \(cluster 1: 1\)"):
        check_part_sizes(validate({}, check_plugins=False), [parts[0], {**parts[1], "count": 1}])


def test_a_part_s_monitor_judges_it_on_its_own_modes(cli_mixture):
    """Each part's monitor scored it against all of ring8's centres: a part that learned its one
    mode covered "1 of 8" against 8 expected, was partial_collapse, and on_collapse=stop halted
    every part at its first check (found by a review). A part is judged on the centres its data
    lie at: its own training points, a faithful sample of it, are healthy, 1 mode of 1 expected."""
    from gancore.data.prepared import load_prepared
    from gancore.diagnostics.verdict import decide
    from gancore.training.monitor import CollapseMonitor

    layout = cli_mixture
    for p in json.loads(layout.mixture.read_text())["parts"]:
        part = layout.part(p["index"])
        data = load_prepared(part.prepared)
        monitor = CollapseMonitor(data, part.prepared, 2, 0, torch.device("cpu"))
        figures = monitor.score(data.train[:2500].float())
        assert (figures["modes_covered"], figures["modes_expected"], figures["mode_kl"]) == (1, 1.0, 0.0), p
        assert decide(figures)["verdict"] == "healthy", (p, decide(figures)["explanation"])


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
    layout = run_stages(tmp_path / "run", sets)
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
    for steps, expected in (("500", 500), ("null", 300)):  # mixture.steps above train.steps, or none: the same for every part
        other = load_params(PARAMS, [*sets, f"mixture.steps={steps}"])
        assert part_steps(other) == part_steps(other, flat[0]) == expected


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
    layout = run_stages(tmp_path / "run", [*sets, "tracking.enabled=false"], ("prepare",))
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
    layout = run_stages(tmp_path / "run", sets)
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
