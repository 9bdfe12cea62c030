"""The collapse monitor: figures and pictures at every check, no effect on training, the best
generator kept, and stop / rollback on collapse, all resumable exactly."""

from __future__ import annotations

import json

import pytest
import torch

from gancore import training, trainlog
from gancore.checkpoint import load_checkpoint
from gancore.failpoints import InjectedFault
from gancore.training import monitor
from helpers import make_layout, make_params

PNG = b"\x89PNG\r\n\x1a\n"


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_monitor_watches_without_changing_training(tmp_path):
    on, off = make_layout(tmp_path / "on"), make_layout(tmp_path / "off")
    training.train(make_params(steps=8, monitor_every=2, log_every=2), on)
    training.train(make_params(steps=8, monitor_every=None, log_every=2), off)
    assert same(weights(on.generator), weights(off.generator)) and same(weights(on.discriminator), weights(off.discriminator))
    rows_on, rows_off = trainlog.read(on.train_log), trainlog.read(off.train_log)
    step_stats = lambda rows: [{k: r[k] for k in trainlog.COLUMNS if k != "seconds"} for r in rows]  # noqa: E731
    assert step_stats(rows_on) == step_stats(rows_off)
    for row in rows_on:  # every monitor step: the 2D protocol's figures, 2,500 fixed latent vectors
        assert 0 <= row["monitor/modes_covered"] <= 8 and 0 <= row["monitor/high_quality_fraction"] <= 1
        assert row["monitor/collapse"] in (0, 1)
    pictures = sorted(p.name for p in on.progress.glob("*.png"))
    assert pictures == [f"step_{s:06d}.png" for s in (2, 4, 6, 8)]
    assert all((on.progress / p).read_bytes().startswith(PNG) for p in pictures)
    assert not list(off.progress.glob("*.png"))


def test_keep_best_keeps_the_generator_of_the_best_check(tmp_path):
    layout = make_layout(tmp_path)
    summary = training.train(make_params(steps=8, monitor_every=2, keep_best="high_quality_fraction"), layout)
    rows = [r for r in trainlog.read(layout.train_log) if r.get("monitor/high_quality_fraction") is not None]
    # ties broken by the other figures: more modes, then the lower reverse KL (the first of equals)
    kl = lambda r: -r["monitor/mode_kl"] if r.get("monitor/mode_kl") is not None else -float("inf")  # noqa: E731
    best = max(rows, key=lambda r: (r["monitor/high_quality_fraction"], r["monitor/modes_covered"], kl(r)))
    record = json.loads((layout.best_models / "best.json").read_text())
    assert record == {
        "figure": "high_quality_fraction",
        "value": best["monitor/high_quality_fraction"],
        "step": best["step"],
        "since_step": 0,
    }
    assert (summary["best_step"], summary["best_value"]) == (best["step"], record["value"])
    assert torch.load(layout.best_models / "generator.pt", weights_only=True)["step"] == best["step"]


@pytest.fixture
def collapse_at(monkeypatch):
    """The verdict the monitor reaches, forced at chosen steps (the verdict rules themselves are
    tested in tests/diagnostics); everything else about the run is real."""
    steps: set[int] = set()

    def judge(figures):
        return "partial_collapse" if figures["step"] in steps else "healthy"

    monkeypatch.setattr(monitor.CollapseMonitor, "judge", staticmethod(judge))
    return steps


def test_stop_ends_training_at_the_collapse_and_stays_stopped(tmp_path, collapse_at):
    collapse_at.add(4)
    layout = make_layout(tmp_path)
    params = make_params(steps=10, monitor_every=2, on_collapse="stop", checkpoint_every=5)
    summary = training.train(params, layout)
    assert summary["stopped_at"] == 4 and summary["steps"] == 4
    assert load_checkpoint(layout.checkpoint)["monitor"]["stopped"] == 4
    assert torch.load(layout.generator, weights_only=True)["step"] == 4
    again = training.train(params, layout)  # resuming a stopped run does not train on
    assert again["steps"] == 4 and same(weights(layout.generator), weights(layout.generator))


def test_rollback_restores_the_last_healthy_state_and_resumes_exactly(tmp_path, collapse_at):
    collapse_at.update({6, 10})
    params = make_params(steps=12, monitor_every=2, on_collapse="rollback", checkpoint_every=4, max_rollbacks=1)
    whole = make_layout(tmp_path / "whole")
    summary = training.train(params, whole)
    rows = {r["step"]: r for r in trainlog.read(whole.train_log)}
    assert rows[6]["monitor/rollback"] == 4  # back to the check at step 4, the last healthy one
    assert rows[10].get("monitor/rollback") is None  # max_rollbacks=1: the second collapse is only recorded
    assert summary["rollbacks"] == 1
    assert load_checkpoint(whole.checkpoint)["monitor"]["rollbacks"] == [{"step": 6, "to": 4, "verdict": "partial_collapse"}]
    # The rolled-back run continued from step 4's weights with a fresh latent stream: not the
    # weights a run without the collapse would have.
    assert load_checkpoint(whole.checkpoint)["trainer"]["rollbacks"] == 1

    part = make_layout(tmp_path / "part")
    training.train(params.model_copy(update={"train": params.train.model_copy(update={"steps": 8})}), part)
    resumed = training.train(params, part)
    assert resumed["resumed_from"] == 8
    assert same(weights(whole.generator), weights(part.generator))


def test_each_rollback_to_the_same_healthy_step_draws_a_new_latent_stream(tmp_path, collapse_at):
    """Healthy at step 2, collapsed at 4 and at every check after: three rollbacks to step 2. The
    restored state holds the rollback count of its own time (0); the stream is chosen by the run's
    count, so the second and third rollbacks do not replay the first one's steps."""
    collapse_at.update({4, 6, 8})
    layout = make_layout(tmp_path)
    params = make_params(steps=8, log_every=1, monitor_every=2, on_collapse="rollback", checkpoint_every=8, max_rollbacks=3)
    assert training.train(params, layout)["rollbacks"] == 3
    rows = {r["step"]: r for r in trainlog.read(layout.train_log)}
    assert [rows[s].get("monitor/rollback") for s in (4, 6, 8)] == [2, 2, 2]
    replays = [(rows[s]["loss_d"], rows[s]["loss_g"]) for s in (5, 7)]  # the first step after rollbacks 1 and 2
    assert replays[0] != replays[1]
    assert load_checkpoint(layout.checkpoint)["trainer"]["rollbacks"] == 3


def test_a_resume_after_a_crash_rolls_back_to_the_healthy_step_its_checkpoint_names(tmp_path, collapse_at, monkeypatch):
    """Checkpoint at step 25 names healthy step 20; the run goes on, writes healthy step 40 and
    crashes at 45. Resumed at 25, the collapse at 30 must roll back to 20, as the uninterrupted run
    did (it loaded the only healthy file, step 40's, before), and end with the same generator."""
    collapse_at.add(30)
    params = make_params(steps=50, log_every=5, checkpoint_every=25, monitor_every=10, on_collapse="rollback")
    whole, crashed = make_layout(tmp_path / "whole"), make_layout(tmp_path / "crashed")
    training.train(params, whole)
    monkeypatch.setenv("GANCORE_FAULTS", "train.step@45=raise")
    with pytest.raises(InjectedFault):
        training.train(params, crashed)
    assert {p.name for p in crashed.healthy_checkpoints} == {"healthy_000020.pt", "healthy_000040.pt"}
    monkeypatch.delenv("GANCORE_FAULTS")
    training.train(params, crashed)
    rows = {layout: {r["step"]: r for r in trainlog.read(layout.train_log)} for layout in (whole, crashed)}
    assert rows[whole][30]["monitor/rollback"] == rows[crashed][30]["monitor/rollback"] == 20
    assert same(weights(whole.generator), weights(crashed.generator))
    assert [p.name for p in crashed.healthy_checkpoints] == ["healthy_000050.pt"]  # the others pruned


def test_keep_best_of_another_figure_after_a_resume_starts_afresh(tmp_path, capsys, monkeypatch):
    """train.keep_best does not change results (a resume may change it), but the best value of one
    figure is no bar for another: 8 modes covered must not keep a high-quality share (at most 1)
    from ever being saved."""
    layout = make_layout(tmp_path)
    training.train(make_params(steps=4, monitor_every=2, keep_best="modes_covered"), layout)
    first = json.loads((layout.best_models / "best.json").read_text())
    assert first["figure"] == "modes_covered" and first["value"] >= 1 and first["since_step"] == 0
    monkeypatch.setenv("GANCORE_PROGRESS", "1")  # notes are said (the suite turns them off)
    summary = training.train(make_params(steps=8, monitor_every=2, keep_best="high_quality_fraction"), layout)
    record = json.loads((layout.best_models / "best.json").read_text())
    assert record["figure"] == "high_quality_fraction" and record["step"] in (6, 8) and 0 <= record["value"] <= 1
    assert summary["best_step"] == record["step"]
    # said, and in best.json: it was silent, and best.json claimed a best over checks it never compared
    assert record["since_step"] == 4
    said = capsys.readouterr().err
    assert (
        f"train.keep_best is high_quality_fraction now, modes_covered when {layout.best_models} kept its generator (step {first['step']})"
        in said
    )
    # resumed again with the same figure: the best so far stands, and so does since when
    training.train(make_params(steps=10, monitor_every=2, keep_best="high_quality_fraction"), layout)
    assert json.loads((layout.best_models / "best.json").read_text())["since_step"] == 4
    assert "train.keep_best is" not in capsys.readouterr().err


def test_a_run_that_acts_on_the_monitor_is_another_run_when_its_verdict_settings_change():
    """Under on_collapse stop or rollback the monitor's verdicts change the weights, so what they
    depend on (diagnose.confidence, diagnose.duplicate_fraction, the image classifier's epochs; and
    diagnose.ndb_bins where the rows outside every cluster are tested) is part of the run's
    identity; a monitor that only watches leaves them out, and ndb_bins is left out elsewhere (a
    review: checkpoints of ring8 from before it counted no longer resumed)."""
    from gancore.checkpoint import describe_mismatch, identity_digest, run_identity

    def identity(on_collapse: str, outside_tested: bool = True, **diagnose):
        params = make_params(monitor_every=2, on_collapse=on_collapse)
        params = params.model_copy(update={"diagnose": params.diagnose.model_copy(update=diagnose)})
        return run_identity(params, "data-digest", outside_tested=outside_tested)

    for changed in ({"confidence": 0.5}, {"duplicate_fraction": 0.1}, {"ndb_bins": 50}):
        acting, other = identity("rollback"), identity("rollback", **changed)
        assert identity_digest(acting) != identity_digest(other)
        key = next(iter(changed))
        assert f"diagnose.{key}" in describe_mismatch(acting, other)
        assert identity_digest(identity("continue")) == identity_digest(identity("continue", **changed))
    assert "ndb_bins" in identity("stop")["diagnose"] and "ndb_bins" not in identity("stop", outside_tested=False)["diagnose"]
    assert "classifier_epochs" in identity("stop")["data"] and "classifier_epochs" not in identity("continue")["data"]
    # the key changed leads; those it made count follow, not as settings to restore (they read
    # "data.classifier_epochs: '(absent)' in the checkpoint, 8 now" beside on_collapse)
    assert describe_mismatch(identity("continue"), identity("stop")) == (
        "train (train.on_collapse: 'continue' in the checkpoint, 'stop' now); with that, these count now and did not then: "
        "data.classifier_epochs, diagnose.confidence, diagnose.duplicate_fraction, diagnose.ndb_bins, train.max_rollbacks, "
        "train.monitor_every"
    )


def test_building_the_monitor_leaves_torch_s_global_generator_where_it_was(tmp_path):
    """The monitor loads the image classifier between the models' seeding and training; the
    network's initial weights were drawn from the global generator, which a plugin's dropout reads
    while training: with the monitor on, such a run trained otherwise than with it off."""
    from gancore.classifiers.domain import fit_domain_classifier
    from gancore.config import Params
    from gancore.data.prepared import PreparedData, save_prepared
    from helpers import image_meta

    images = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(96) % 10
    data = PreparedData(image_meta("mnist", [1, 28, 28], 64, 32, {"count": 10}), images[:64], images[64:], labels[:64], labels[64:])
    data.meta["classifier"] = fit_domain_classifier(data, Params(device="cpu", data={"name": "mnist", "classifier_epochs": 1}), tmp_path)
    save_prepared(tmp_path, data)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    built = monitor.CollapseMonitor(data, tmp_path, 8, 0, torch.device("cpu"))
    assert built.classifier is not None and torch.equal(torch.get_rng_state(), before)


def test_keep_best_never_keeps_a_generator_judged_collapsed(tmp_path, collapse_at):
    """keep_best ran before the collapse check: a collapsed generator (one mode, every sample
    high quality) became models/best/, and a rollback from it left it there for
    sample.generator=best (found by a review)."""
    collapse_at.update({2, 4, 6, 8})
    layout = make_layout(tmp_path)
    summary = training.train(make_params(steps=8, monitor_every=2, keep_best="high_quality_fraction"), layout)
    assert summary["best_step"] is None and not layout.best_models.exists()
    collapse_at.difference_update({6})
    again = make_layout(tmp_path / "again")
    summary = training.train(make_params(steps=8, monitor_every=2, keep_best="high_quality_fraction"), again)
    assert summary["best_step"] == 6


def test_keep_best_ties_go_to_the_other_figures():
    """modes_covered saturates early: on a strict comparison the first step to cover every mode
    stayed the best however poor its samples (8 of 8 at 6 % high quality, a later step 76 %)."""
    from gancore.training.loop import LoopState, rank_key

    early = {"modes_covered": 8, "high_quality_fraction": 0.06, "mode_kl": 0.4}
    later = {"modes_covered": 8, "high_quality_fraction": 0.76, "mode_kl": 0.01}
    state = LoopState(best_value=8, best_step=500, best_figure="modes_covered", best_key=rank_key("modes_covered", early))
    assert state.improves("modes_covered", later) and not state.improves("modes_covered", early)
    assert not state.improves("modes_covered", {**later, "modes_covered": 7})
    # lower is better for mode_kl, and an unmeasured secondary ranks below a measured one
    assert rank_key("mode_kl", later) > rank_key("mode_kl", early)
    assert rank_key("modes_covered", {"modes_covered": 8}) < rank_key("modes_covered", later)
    assert rank_key("mode_kl", {"modes_covered": 8}) is None


def test_a_restart_leaves_no_best_of_the_run_before(tmp_path):
    """`gan train --restart` kept models/best/ of the run before, and sample.generator=best drew
    from it beside the new run's last generator (found by a review). The new run removes it at
    its end when it kept none, and sampling refuses a best of other parameters."""
    import shutil

    from gancore.config import validate
    from gancore.errors import GanCoreError
    from gancore.sampling import generator_path

    layout = make_layout(tmp_path)
    training.train(make_params(steps=8, monitor_every=2, keep_best="high_quality_fraction"), layout)
    kept = tmp_path / "kept-best"
    shutil.copytree(layout.best_models, kept)
    other = make_params(steps=8, monitor_every=2)
    other = other.model_copy(update={"seed": 11})
    training.train(other, layout, restart=True)
    assert not layout.best_models.exists()
    shutil.copytree(kept, layout.best_models)  # another run's best beside this run's last
    tree = other.model_dump(mode="json")
    best = validate({**tree, "train": {**tree["train"], "keep_best": "high_quality_fraction"}, "sample": {"generator": "best"}})
    with pytest.raises(GanCoreError, match="was kept by another training run"):
        generator_path(best, layout)


def test_a_part_without_held_out_points_is_measured_against_its_own_training_points(tmp_path):
    """A part no test point falls in gets the whole test split, the whole data set's: its spread
    made a healthy part's samples look collapsed to the distance figures (found by a review). It
    is measured against its own training points instead."""
    from gancore.data.prepared import PreparedData
    from gancore.training.monitor import CollapseMonitor
    from helpers import ring_data

    whole = ring_data(n_train=512, n_test=256)
    mine = whole.train_labels == 0
    part = PreparedData(
        {**whole.meta, "own_test": False, "part": {"index": 0, "of": 8, "description": "cluster 0"}},
        whole.train[mine],
        whole.test,
        whole.train_labels[mine],
        whole.test_labels,
    )
    figures = CollapseMonitor(part, tmp_path, 2, 0, torch.device("cpu")).score(part.train)
    assert 0.8 < figures["pairwise_distance_ratio"] < 1.2
