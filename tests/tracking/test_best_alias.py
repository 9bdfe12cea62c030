"""The registry's ``@best`` alias moves only between runs measured alike: a model name is shared by
every points file and image folder, and a run on 3 modes must not outrank one on 25 by its share."""

from __future__ import annotations

from mlflow import MlflowClient

from gancore.tracking.models import BEST_ALIAS, promote_if_best


def _run(
    c: MlflowClient,
    experiment: str,
    name: str,
    path: str,
    covered: float,
    total: float,
    n_generated: str,
    sha: str = "aaaa",
    confidence: str = "0.9",
) -> str:
    run = c.create_run(experiment)
    rid = run.info.run_id
    for key, value in (("data.name", "points"), ("data.path", path), ("seed", "0"), ("diagnose.confidence", confidence)):
        c.log_param(rid, key, value)
    c.set_tag(rid, "data.source_sha256", sha)
    for key, value in (("modes_covered", covered), ("modes_total", total), ("high_quality_fraction", 0.98)):
        c.log_metric(rid, key, value)
    c.set_tag(rid, "verdict", "healthy")
    for field, value in (("feature_network", "coordinates"), ("n_generated", n_generated), ("n_real", "1000")):
        c.set_tag(rid, f"provenance.{field}", value)
    c.create_model_version(name, f"runs:/{rid}/model", rid)
    return rid


def test_best_moves_between_runs_on_the_same_data_and_protocol_only(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_TELEMETRY", "false")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the registry too: a run earlier in this process (tracking.store.client) set the process-wide
    # registry URI, which a client given only a tracking URI reads (a server long gone)
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = c.create_experiment("best", artifact_location=str(tmp_path / "artifacts"))
    name = "gancore-points-mlp"
    c.create_registered_model(name)
    first = _run(c, experiment, name, "/data/blobs25.csv", 20, 25, "2500")
    assert promote_if_best(c, name, first) and c.get_model_version_by_alias(name, BEST_ALIAS).run_id == first
    # Another file: all of its 3 modes beat 20 of 25 by share, but they were not measured alike.
    other_file = _run(c, experiment, name, "/data/blobs3.csv", 3, 3, "2500")
    assert not promote_if_best(c, name, other_file)
    # The same file at another sample size: FID and coverage move with n.
    other_n = _run(c, experiment, name, "/data/blobs25.csv", 25, 25, "1000")
    assert not promote_if_best(c, name, other_n)
    assert c.get_model_version_by_alias(name, BEST_ALIAS).run_id == first
    # The same file edited in place (its settings unchanged), or judged at another confidence.
    edited = _run(c, experiment, name, "/data/blobs25.csv", 25, 25, "2500", sha="bbbb")
    assert not promote_if_best(c, name, edited)
    lenient = _run(c, experiment, name, "/data/blobs25.csv", 25, 25, "2500", confidence="0.5")
    assert not promote_if_best(c, name, lenient)
    better = _run(c, experiment, name, "/data/blobs25.csv", 24, 25, "2500")
    assert promote_if_best(c, name, better) and c.get_model_version_by_alias(name, BEST_ALIAS).run_id == better
