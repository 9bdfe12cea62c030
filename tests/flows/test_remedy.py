"""gan-remedy: the pipeline, then the remedies its diagnosis names (with their settings) as a
sweep, a ranked comparison, an MLflow parent run over the members and the registry alias."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from gancore.ranking import group_rank_key, headline, rank_key
from gancore_flows.remedy import gan_remedy


def test_remedies_run_as_a_sweep_and_the_best_is_ranked_first(prefect_harness, project):
    # 40 steps of one GAN: far from converged, so the diagnosis names remedies.
    state = gan_remedy(
        return_state=True,
        params_file=str(project / "params.yaml"),
        workers=2,
        train={"steps": 40, "monitor_every": 20},
        sets=["mixture.steps=150"],
        remedies=["mixture"],  # of what it proposes, this one (each member is a pipeline)
        repeats=2,  # each on two training seeds, the baseline too
    )
    assert state.is_completed(), state
    ranked = state.result()
    baseline = next(r for r in ranked if r["label"] == "baseline")
    assert baseline["verdict"] != "healthy" and len(ranked) >= 2
    c = MlflowClient()
    base_run = c.get_run(baseline["mlflow_run_id"])
    proposed = [r["name"] for r in eval_settings(base_run)]
    assert "longer" in proposed and len(proposed) > 2  # so the choice below left some out
    chosen = [n for n in proposed if n == "mixture"]
    assert sorted((r["label"], r["train_seed"]) for r in ranked) == sorted((n, s) for n in ["baseline", *chosen] for s in (0, 1))
    for r in ranked:
        run = c.get_run(r["mlflow_run_id"])
        for setting in r["settings"]:  # each remedy ran with exactly its settings, on its training seed
            key, value = setting.split("=", 1)
            assert run.data.params[key] == value, setting
        assert run.data.params["train.seed"] == ("null" if r["train_seed"] == 0 and r["label"] == "baseline" else str(r["train_seed"]))
        assert run.data.params["seed"] == "0"  # one data set
    # Best first by the ranking rule over each remedy's seeds, and all members nested under the
    # remedy's parent run.
    groups: dict[int, list] = {}
    for r in ranked:
        groups.setdefault(r["rank"], []).append((c.get_run(r["mlflow_run_id"]).data.metrics, r["verdict"]))
    keys = [group_rank_key(groups[i]) for i in sorted(groups)]
    assert len(keys) == 1 + len(chosen) and keys == sorted(keys, reverse=True)
    parents = {c.get_run(r["mlflow_run_id"]).data.tags["mlflow.parentRunId"] for r in ranked}
    assert len(parents) == 1
    parent = c.get_run(parents.pop())
    note = parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["remedy.best"] == ranked[0]["label"] and "| rank | remedy | settings | runs | verdicts |" in note
    assert "Every run:" in note and "over 2 training seeds" in note
    # The registry alias follows the best healthy version.
    if ranked[0]["verdict"] == "healthy":
        best = c.get_model_version_by_alias("gancore-ring8-mlp", "best")
        winner = c.get_run(ranked[0]["mlflow_run_id"])
        assert rank_key(c.get_run(best.run_id).data.metrics, "healthy") >= rank_key(winner.data.metrics, "healthy")


def eval_settings(run) -> list[dict]:
    import json

    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="metrics/diagnose.json")
    return [r for r in json.loads(open(path).read())["remedy_settings"] if r["sets"]]


def test_ranking_prefers_healthy_then_coverage_then_quality():
    healthy = rank_key(headline({}, {"modes_covered": 7, "modes_total": 8, "high_quality_fraction": 0.5}), "healthy")
    collapsed = rank_key(headline({}, {"modes_covered": 8, "modes_total": 8, "high_quality_fraction": 0.99}), "partial_collapse")
    better = rank_key(headline({}, {"modes_covered": 8, "modes_total": 8, "high_quality_fraction": 0.9}), "healthy")
    assert better > healthy > collapsed


def test_unknown_remedy_names_are_a_usage_error_naming_the_known_ones(capsys):
    from gancore_flows.remedy import main

    assert main(["--remedies", "mixture,pakc2"]) == 2
    err = capsys.readouterr().err
    assert "'pakc2'" in err and "pack2" in err and "mixture" in err


def test_every_remedy_the_catalogue_proposes_has_a_known_name():
    from gancore.diagnostics.remedies import NAMES, plan

    verdicts = [
        "complete_collapse",
        "partial_collapse",
        "intra_mode_collapse",
        "not_converged",
        "data_copying",
        "discriminator_overfitting",
    ]
    dynamics = {"vanishing_gradients": {"flag": True}, "dominance": {"flag": True}, "bn_drift": {"flag": True}}
    seen = set()
    for context in (
        {"steps": 100, "monitor_every": 10, "modes_total": 8, "lr_g": 1e-4, "lr_d": 1e-3, "n_critic": 5, "arch_options": ["batch_norm"]},
        {"mixture": True, "mixture_parts": 1, "pack": 4, "kind": "image"},
    ):
        for loss in ("minimax", "non_saturating"):
            seen |= {r.name for r in plan(verdicts, loss, dynamics, context)}
    assert seen <= set(NAMES)
    assert {"non_saturating", "wasserstein_gp", "balance", "mixture", "pack2", "pack4", "longer", "earlier"} <= seen
