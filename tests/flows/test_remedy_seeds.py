"""gan-remedy over several training seeds (``repeats``): which runs it plans, and how it ranks a
remedy by its runs: the share called healthy first, then the mean figures (one run: its own key)."""

from __future__ import annotations

import pytest

from gancore.ranking import group_rank_key, headline, rank_key
from gancore_flows.remedy import rank, remedy_members, seeds_table, table

PLAN = [{"name": "longer", "sets": ["train.steps=80"]}, {"name": "pack2", "sets": ["model.pack=2"]}]


def _result(verdict: str, covered: int, hq: float, fid: float = 1.0) -> dict:
    card = {"feature_space": "gaussian_posterior", "n_generated": 100}
    return {
        "evaluate": {"fid": fid, "modes_covered": covered, "modes_total": 8, "provenance": card},
        "diagnose": {"verdict": verdict, "modes_covered": covered, "modes_total": 8, "high_quality_fraction": hq},
    }


def test_each_remedy_runs_on_every_training_seed_and_the_baseline_on_the_seeds_after_its_own():
    one = remedy_members(PLAN, [0], {"train": None}, ["x.y=1"])
    assert [(m["label"], m["run_label"], m["sets"]) for m in one] == [
        ("longer", "longer", ["x.y=1", "train.steps=80"]),
        ("pack2", "pack2", ["x.y=1", "model.pack=2"]),
    ]  # one seed: as before repeats existed, the run's own train.seed
    assert remedy_members(None, [0], {}, None) == []
    again = remedy_members(None, [3, 4, 5], {}, None)  # the baseline, before any remedy is chosen
    assert [(m["label"], m["run_label"], m["sets"]) for m in again] == [
        ("baseline", "baseline-trainseed4", ["train.seed=4"]),
        ("baseline", "baseline-trainseed5", ["train.seed=5"]),
    ]
    three = remedy_members(PLAN, [3, 4, 5], {}, None)
    assert [(m["label"], m["train_seed"], m["sets"][-1]) for m in three] == [
        ("longer", 3, "train.seed=3"),
        ("longer", 4, "train.seed=4"),
        ("longer", 5, "train.seed=5"),
        ("pack2", 3, "train.seed=3"),
        ("pack2", 4, "train.seed=4"),
        ("pack2", 5, "train.seed=5"),
    ]
    assert three[1]["run_label"] == "longer-trainseed4" and three[1]["sets"] == ["train.steps=80", "train.seed=4"]


def test_a_remedy_healthy_on_more_seeds_outranks_one_whose_best_run_is_better():
    def row(label: str, seed: int, result, extra=()):
        return {"label": label, "extra": list(extra), "train_seed": seed, "result": result, "error": None if result else "boom"}

    rows = [
        row("baseline", 0, _result("partial_collapse", 5, 0.9)),
        row("baseline", 1, _result("partial_collapse", 6, 0.9)),
        # pack2's best run beats every other run, but it is healthy on one seed of two
        row("pack2", 0, _result("healthy", 8, 0.99), ["model.pack=2"]),
        row("pack2", 1, _result("partial_collapse", 4, 0.5), ["model.pack=2"]),
        row("longer", 0, _result("healthy", 8, 0.80), ["train.steps=80"]),
        row("longer", 1, _result("healthy", 8, 0.85), ["train.steps=80"]),
        row("mixture", 0, None),
        row("mixture", 1, None),
    ]
    ranked = rank(rows)
    assert [(r["rank"], r["label"], r["train_seed"]) for r in ranked] == [
        (1, "longer", 1),  # healthy on both seeds; within a remedy, its runs best first
        (1, "longer", 0),
        (2, "pack2", 0),  # healthy on half: ahead of a baseline healthy on none
        (2, "pack2", 1),
        (3, "baseline", 1),
        (3, "baseline", 0),
        (4, "mixture", 0),  # no run finished: last
        (4, "mixture", 1),
    ]
    # a failed run counts as not healthy: longer with a third, failed seed has the share of pack2
    figures = [(headline(r["result"]["evaluate"], r["result"]["diagnose"]), "healthy") for r in rows[4:6]]
    assert group_rank_key([*figures, ({}, None)])[0] == pytest.approx(2 / 3)

    headers, cells = seeds_table(ranked)
    assert headers[:5] == ["rank", "remedy", "settings", "runs", "verdicts"]
    assert cells[0][:5] == ["1", "longer", "train.steps=80", "2 of 2", "2 healthy"]
    assert cells[1][4] in ("1 healthy, 1 partial_collapse", "1 partial_collapse, 1 healthy")
    assert cells[3][3:5] == ["0 of 2", ""]
    per_run_headers, per_run = table(ranked)
    assert per_run_headers[3] == "train.seed" and per_run[0][:4] == ["1", "longer", "train.steps=80", "1"]
    assert per_run[-1][4].startswith("failed: boom")


def test_one_run_a_remedy_ranks_as_before():
    for result in (_result("healthy", 7, 0.5), _result("partial_collapse", 8, 0.99, fid=3.0)):
        figures, verdict = headline(result["evaluate"], result["diagnose"]), result["diagnose"]["verdict"]
        assert group_rank_key([(figures, verdict)]) == rank_key(figures, verdict)
    rows = [
        {"label": name, "extra": [], "train_seed": 0, "result": _result(v, c, 0.9)}
        for name, v, c in [("baseline", "partial_collapse", 6), ("mixture", "healthy", 8)]
    ]
    ranked = rank(rows)
    assert [(r["rank"], r["label"]) for r in ranked] == [(1, "mixture"), (2, "baseline")]
    assert seeds_table(ranked) is None and "train.seed" not in table(ranked)[0]


@pytest.mark.parametrize("repeats", ["0", "-2"])
def test_repeats_below_one_are_a_usage_error(capsys, repeats):
    from gancore_flows.remedy import main

    assert main(["--repeats", repeats]) == 2
    assert f"--repeats: repeats must be a whole number of training seeds, 1 or more (got {int(repeats)})" in capsys.readouterr().err


def test_training_seeds_past_the_largest_are_refused_before_the_baseline_trains(capsys):
    from gancore_flows.remedy import main

    last = 2**32 - 1
    assert main(["--repeats", "3", "-S", f"train.seed={last - 1}"]) == 2
    assert f"repeats=3 from train.seed {last - 1} runs past the largest seed, {last}: set a lower train.seed" in capsys.readouterr().err
    # train.seed null: the seed it follows is the one to lower (the message named train.seed)
    assert main(["--repeats", "3", "-S", f"seed={last - 1}"]) == 2
    assert f"repeats=3 from seed {last - 1} runs past the largest seed, {last}: set a lower seed" in capsys.readouterr().err


def test_the_parent_run_logs_what_the_ranking_read():
    from gancore.ranking import mean_figures

    runs = [({"fid": 1.0, "modes_covered": 8.0}, "healthy"), ({"fid": 3.0, "modes_covered": float("nan")}, "partial_collapse")]
    assert mean_figures(runs) == {"fid": 2.0, "modes_covered": 8.0, "healthy_share": 0.5}
    assert mean_figures([]) == {}
