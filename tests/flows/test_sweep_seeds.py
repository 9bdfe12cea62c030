"""A sweep over seeds: over the seed (each member its own data) or over ``train.seed`` (training
alone, on one data set), and the summary of each configuration over its seeds."""

from __future__ import annotations

import math

import pytest

from gancore.config import ParamsError
from gancore_flows.pipeline import prepare_key
from helpers import PARAMS


def test_a_sweep_over_training_seeds_keeps_one_data_set_and_refuses_train_seed_settings(capsys):
    """``--seed-key train.seed``: the members differ by training's seed alone, so they share one
    preparation (one cache key), the top-level seed and so the samples' latents and evaluation's
    subsets; -S train.seed is then the swept axis, and -S seed the data's seed, allowed."""
    from gancore_flows.sweep import check_sets, comparison_rows, main, sweep_members

    members = sweep_members(["mlp"], ["hinge"], [4, 5], str(PARAMS), ["seed=2"], {}, "train.seed")
    assert [m["label"] for m in members] == ["mlp-hinge-trainseed4", "mlp-hinge-trainseed5"]
    assert [(m["params"].seed, m["params"].train.seed, m["params"].training_seed) for m in members] == [(2, 4, 4), (2, 5, 5)]
    assert prepare_key(members[0]["params"]) == prepare_key(members[1]["params"])
    default = sweep_members(["mlp"], ["hinge"], [4, 5], str(PARAMS), [], {})
    assert [m["params"].seed for m in default] == [4, 5] and prepare_key(default[0]["params"]) != prepare_key(default[1]["params"])
    assert comparison_rows([], seed_key="train.seed")[0][:3] == ["arch", "loss", "train.seed"]

    check_sets(["seed=3"], "train.seed")
    assert main(["--params", str(PARAMS), "--seed-key", "train.seed", "-S", "train.seed=3"]) == 2
    # names the swept key it overrides, not every swept key
    assert "train.seed=3 would override the swept train.seed; sweep it with archs, losses and seeds" in capsys.readouterr().err
    # a seed twice is one run counted twice (the s.e. over seeds shrank with it)
    assert main(["--params", str(PARAMS), "--seed", "0", "--seed", "0", "--seed", "1", "--seed-key", "train.seed"]) == 2
    assert "seeds: 0 given more than once; give each once" in capsys.readouterr().err
    with pytest.raises(ParamsError, match=r"archs: mlp given more than once(.|\n)*losses: hinge given more than once"):
        sweep_members(["mlp", "mlp"], ["hinge", "hinge"], [0], str(PARAMS), [], {})
    with pytest.raises(SystemExit) as exit_info:
        main(["--params", str(PARAMS), "--seed-key", "data.seed"])
    assert exit_info.value.code == 2 and "--seed-key: invalid choice: 'data.seed'" in capsys.readouterr().err


def _result(verdict: str, covered: int, fid: float, precision: float | None = 0.9) -> dict:
    return {
        "evaluate": {"fid": fid, "precision": precision, "modes_covered": covered, "modes_total": 8},
        "diagnose": {"verdict": verdict, "modes_covered": covered, "modes_total": 8},
    }


def test_each_configuration_is_summarised_over_its_seeds_as_mean_and_standard_error():
    from gancore_flows.sweep import FIGURES, over_seeds

    def member(loss: str, seed: int, result):
        return {"arch": "mlp", "loss": loss, "seed": seed, "result": result, "error": "boom" if result is None else None}

    single = [member("hinge", 0, _result("healthy", 8, 1.0)), member("non_saturating", 0, _result("healthy", 8, 2.0))]
    assert over_seeds(single) is None  # one draw each: nothing to summarise

    members = [
        member("hinge", 0, _result("healthy", 8, 1.0)),
        member("hinge", 1, _result("partial_collapse", 7, 2.0, precision=None)),
        member("hinge", 2, _result("healthy", 8, 4.0)),
        member("non_saturating", 0, _result("mode_collapse", 1, 50.0)),
        member("non_saturating", 1, None),
    ]
    text = over_seeds(members, "train.seed")
    assert text is not None and text.startswith("Over train.seed (mean ± standard error of the runs that finished):")
    lines = text.splitlines()
    header = lines[2].strip("| ").split(" | ")
    assert header[:4] == ["arch", "loss", "runs", "verdicts"] and len(header) == 4 + len(FIGURES)
    hinge, non_saturating = (dict(zip(header, line.strip("| ").split(" | "))) for line in lines[4:6])
    # sample sd (ddof 1) over sqrt(n): FID 1, 2, 4 -> 7/3 +- sqrt(7/3)/sqrt(3); modes 8, 7, 8 -> 23/3 +- 1/3
    se_fid = math.sqrt(7 / 3) / math.sqrt(3)
    assert hinge["runs"] == "3 of 3" and hinge["verdicts"] == "2 healthy, 1 partial_collapse"
    assert hinge["FID"] == f"{7 / 3:.4g} ± {se_fid:.2g}" == "2.333 ± 0.88"
    assert hinge["modes covered"] == "7.667 ± 0.33 / 8"
    assert hinge["precision"] == "0.9 ± 0 (2 runs)"  # the run without it is left out, and said so
    assert hinge["recall"] == "n/a"
    # a failed member counts against its configuration; one finished run has no spread to show
    assert non_saturating["runs"] == "1 of 2" and non_saturating["verdicts"] == "1 mode_collapse"
    assert non_saturating["FID"] == "50" and non_saturating["modes covered"] == "1 / 8"

    # a NaN is a figure not measured (as the ranking reads it), and modes unknown have no total
    unknown = [
        member("hinge", s, {"evaluate": {"fid": v}, "diagnose": {"verdict": "healthy", "modes_covered": None, "modes_total": None}})
        for s, v in ((0, 1.0), (1, float("nan")))
    ]
    row = dict(zip(header, over_seeds(unknown).splitlines()[4].strip("| ").split(" | ")))
    assert row["FID"] == "1 (1 run)" and row["modes covered"] == "n/a"
