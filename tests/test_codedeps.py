"""Stage dependencies derived, not remembered: dvc.yaml's code deps and the Prefect cache key of
prepare follow from the imports of the code each stage runs (:mod:`gancore.codedeps`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from gancore import codedeps
from helpers import REPO


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_dvc_yaml_lists_exactly_the_code_each_stage_runs():
    assert codedeps.check_dvc(_stages()) == []


def test_the_issue_s_drift_is_covered():
    """k-means (now gancore/clustering.py) runs in prepare; the monitor's diagnostics, classifiers
    and pictures run in train: each is a dependency of its stage."""
    assert "gancore/clustering.py" in codedeps.stage_deps("prepare")
    train = codedeps.stage_deps("train")
    assert {"gancore/diagnostics", "gancore/classifiers/domain_networks.py", "gancore/pictures.py", "plugins"} <= set(train)
    # Fitting the domain classifier is prepare's work: train loads it, never fits it.
    assert "gancore/classifiers/domain.py" not in train and "gancore/classifiers/domain.py" in codedeps.stage_deps("prepare")
    # The Inception networks are loaded by name (gancore.classifier_choices): evaluate runs them,
    # train (whose monitor scores with the domain classifier) does not.
    assert "gancore/classifiers/inception.py" in codedeps.stage_deps("evaluate")
    assert "gancore/classifiers/inception.py" not in train


def test_a_planted_import_is_caught(monkeypatch):
    """A new import inside a module prepare runs (here: clustering importing the probe) makes
    dvc.yaml stale, and the check names the file; a dependency the stage stopped using too."""
    real = codedeps.imports_of
    clustering = codedeps.PACKAGE / "clustering.py"

    def planted(path: Path) -> frozenset[Path]:
        extra = {codedeps.PACKAGE / "probe.py"} if path == clustering else set()
        return real(path) | extra

    monkeypatch.setattr(codedeps, "imports_of", planted)
    problems = codedeps.check_dvc(_stages())
    assert "dvc.yaml: stage prepare misses gancore/probe.py, which it runs" in problems
    stages = _stages()
    stages["sample"]["deps"].append("gancore/evaluation.py")
    monkeypatch.setattr(codedeps, "imports_of", real)
    assert codedeps.check_dvc(stages) == ["dvc.yaml: stage sample lists gancore/evaluation.py, which it does not run"]


def test_the_prefect_cache_key_hashes_the_files_dvc_lists(monkeypatch):
    import hashlib

    from gancore_flows import pipeline

    listed = [d for d in _stages()["prepare"]["deps"] if d.startswith("gancore")]
    files = sorted(
        f for d in listed for f in ((REPO / d).rglob("*.py") if (REPO / d).is_dir() else [REPO / d]) if "__pycache__" not in f.parts
    )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    assert codedeps.code_digest("prepare") == digest.hexdigest()[:16]
    before = pipeline.code_version()
    monkeypatch.setattr(codedeps, "code_digest", lambda stage: "edited")
    assert pipeline.code_version() != before


def test_the_train_stage_reruns_when_what_the_monitor_s_verdict_reads_changes():
    """A monitor that acts on collapse changes the weights by its verdict, whose settings are part
    of the run's identity (checkpoint.VERDICT_SETTINGS); ``dvc repro`` must see them too."""
    from gancore.checkpoint import OUTSIDE_VERDICT_SETTINGS, VERDICT_SETTINGS

    read = VERDICT_SETTINGS["diagnose"] + OUTSIDE_VERDICT_SETTINGS
    assert {f"diagnose.{key}" for key in read} <= set(_stages()["train"]["params"])
