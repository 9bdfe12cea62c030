"""Stages refused before their MLflow record opens: the refused parameters reach no run, the run
in hand (``.mlflow_run.json``) stays as it was, and no earlier run is marked killed. A refusal used
to open a run, log the earlier stages under the refused parameters and mark it failed; a refused
resume also killed the pipeline run it replaced."""

from __future__ import annotations

import re
import shutil

import mlflow
import pytest
from mlflow import MlflowClient

from gancore import tracking
from gancore.config import load_params
from gancore.errors import GanCoreError
from gancore.layout import Layout
from gancore.stages import run_stage
from helpers import write_params

EXPERIMENT = "gancore-tests"

# The tiny_run of conftest.py: on the worker that built it.
pytestmark = pytest.mark.xdist_group("tracking")


def run_count() -> int:
    return len(mlflow.search_runs(experiment_names=[EXPERIMENT]))


def snapshot(layout: Layout) -> tuple[str, int, str]:
    """What a refused stage leaves as it was: the hand-over file, the runs, the run in hand's status."""
    return layout.run_file.read_text(), run_count(), MlflowClient().get_run(tracking.current_run_id(layout)).info.status


def test_a_stage_refused_for_other_data_leaves_the_run_as_it_was(tiny_run):
    """Refused before the recorder opens a run: the refused parameters reach no run (they opened
    one, logged the earlier stages under them and marked it failed)."""
    params, layout, _ = tiny_run
    other = load_params(write_params(layout.root / "other.yaml", data={"name": "grid25"}))
    before = snapshot(layout)
    with pytest.raises(GanCoreError, match='data.name: "ring8" then, "grid25" now'):
        run_stage("evaluate", other, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    assert snapshot(layout) == before


def test_a_points_file_refused_by_prepare_opens_no_run_and_leaves_the_data(tiny_run, tmp_path):
    """prepare reads its input file inside the stage: the record opens once it has been read, so a
    bad cell is refused like other data (it opened a run, logged the parameters and marked it
    failed), and the prepared data and the run in hand stay as they were."""
    params, layout, _ = tiny_run
    bad = tmp_path / "points.csv"
    bad.write_text("x,y\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(300)) + "1.0,abc\n")
    other = load_params(write_params(layout.root / "points.yaml", data={"name": "points", "path": str(bad)}))
    before, prepared = snapshot(layout), layout.prepared_meta.read_bytes()
    with pytest.raises(GanCoreError, match=r"points.csv, row 302, column 'y': 'abc' is not a number"):
        run_stage("prepare", other, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    assert snapshot(layout) == before and layout.prepared_meta.read_bytes() == prepared
    # in a folder of its own, the folders prepare made for it are gone too
    fresh = Layout(tmp_path / "new" / "run")
    with pytest.raises(GanCoreError, match="is not a number"):
        run_stage("prepare", other, fresh, tracking.FileHandedRecorder(str(fresh.root), "cli"))
    assert not (tmp_path / "new").exists() and run_count() == before[1]


def test_a_refused_resume_opens_no_run_and_kills_none(tiny_run):
    """The checkpoint is checked inside train: its record opens once the checkpoint has passed."""
    params, layout, _ = tiny_run
    other = load_params(write_params(layout.root / "seed5.yaml", train={"seed": 5}))
    before = snapshot(layout)
    with pytest.raises(GanCoreError, match=r"was written by a different run; parameters differ in: .*train.seed"):
        run_stage("train", other, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    assert snapshot(layout) == before


@pytest.mark.parametrize(
    ("stage", "missing"),
    [
        ("sample", "generator.pt is missing: run `gan train` first"),
        ("evaluate", "samples.pt is missing: run `gan sample` first"),
        ("diagnose", "samples.pt is missing: run `gan sample` first"),
    ],
)
def test_a_stage_without_its_input_opens_no_run(tiny_run, tmp_path, stage, missing):
    """Prepared data and nothing else: each stage said what to run first, after opening a FAILED
    run and writing a hand-over file that named the stages before it as reused."""
    params, layout, _ = tiny_run
    alone = Layout(tmp_path)
    shutil.copytree(layout.prepared, alone.prepared)
    count = run_count()
    with pytest.raises(GanCoreError, match=re.escape(missing)):
        run_stage(stage, params, alone, tracking.FileHandedRecorder(str(alone.root), "cli"))
    assert run_count() == count and not alone.run_file.exists()


def test_a_refused_resume_under_several_devices_opens_no_run_and_starts_no_torchrun(tiny_run, tmp_path, monkeypatch):
    """With ``train.devices > 1`` the ranks checked the checkpoint: a refused resume opened the
    stage's run and failed it after torchrun had started two processes. The launcher checks it
    now, before the record opens (a checkpoint of one process does not continue on two)."""
    from gancore.training import distributed

    _, layout, _ = tiny_run
    alone = Layout(tmp_path)
    shutil.copytree(layout.prepared, alone.prepared)
    single = load_params(write_params(tmp_path / "single.yaml", mixture={"enabled": False}))
    run_stage("train", single, alone, tracking.FileHandedRecorder(str(alone.root), "cli"))
    two = load_params(write_params(tmp_path / "two.yaml", mixture={"enabled": False}, train={"devices": 2}))
    monkeypatch.setattr(distributed, "launch", lambda *a: pytest.fail("torchrun was launched"))
    before = snapshot(alone)
    with pytest.raises(
        GanCoreError, match=r"differ in: world_size \(processes training it, set by train.devices .*: 1 in the checkpoint, 2 now\)"
    ):
        run_stage("train", two, alone, tracking.FileHandedRecorder(str(alone.root), "cli"))
    assert snapshot(alone) == before


def test_a_mixture_whose_later_part_is_refused_opens_no_run_and_trains_none(tiny_run, tmp_path):
    """A mixture's parts were checked in turn: a later part's checkpoint of another run was refused
    after the record opened and the earlier parts had trained (hours, on real data), and the run
    failed. Every part's checkpoint is checked before the first trains."""
    mixture = {"enabled": True, "partition": "kmeans", "parts": 2, "steps": 20}
    layout = Layout(tmp_path / "run")
    for stage in ("prepare", "train"):
        run_stage(
            stage,
            load_params(write_params(tmp_path / "two.yaml", mixture=mixture)),
            layout,
            tracking.FileHandedRecorder(str(layout.root), "cli"),
        )
    first = layout.part(0)
    first.checkpoint.unlink()  # part 1 would start afresh; part 2 resumes another run's checkpoint
    generator = first.generator.read_bytes()
    other = load_params(write_params(tmp_path / "seed5.yaml", mixture=mixture, train={"seed": 5}))
    before = snapshot(layout)
    with pytest.raises(
        GanCoreError, match=r"parts/part01/last.pt \(step 20\) was written by a different run; parameters differ in: train \(train.seed"
    ):
        run_stage("train", other, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    assert snapshot(layout) == before and first.generator.read_bytes() == generator and not first.checkpoint.exists()
