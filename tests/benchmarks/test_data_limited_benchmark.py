"""The data-limited benchmark runs end to end (--tiny): every augmentation on the same subset,
scored with the full data's classifier, its table beside the published anchors."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from helpers import import_benchmark


def test_tiny_run_trains_every_policy_on_one_yardstick(tmp_path):
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    data_limited = import_benchmark("data_limited")
    stdout = io.StringIO()
    out = tmp_path / "runs"
    with contextlib.redirect_stdout(stdout):
        assert (
            data_limited.main(["--tiny", "--data", "mnist", "--workers", "2", "--json", str(tmp_path / "r.json"), "--out", str(out)]) == 0
        )
    result = json.loads((tmp_path / "r.json").read_text())
    assert sorted(r["policy"] for r in result["runs"]) == ["adaptive", "fixed", "held_out", "none"]
    p_final = {r["policy"]: r["p_final"] for r in result["runs"]}
    assert p_final["none"] is None and p_final["fixed"] == 1.0 and all(0 <= p_final[k] <= 1 for k in ("adaptive", "held_out"))
    assert all(r["n_train"] == 64 and r["d_gap"] is not None for r in result["runs"])  # 1 % of the tiny 2,000, at least 64
    # One yardstick: every run's domain classifier is the reference's (trained on the whole set).
    reference = (out / "mnist" / "reference" / "data" / "prepared" / "classifier.pt").read_bytes()
    for run in (out / "mnist").glob("0.01-*"):
        assert (run / "data" / "prepared" / "classifier.pt").read_bytes() == reference
    # A later invocation reuses the reference only if it was prepared with the same settings.
    made_with = out / "mnist" / "reference" / "reference_settings.json"
    assert json.loads(made_with.read_text())["data"]["n_test"] == 300
    text = stdout.getvalue()
    from gancore.device import software

    # The install that trained the runs, in every record and over the table (two installs round
    # a long run apart: gancore.device).
    assert all(r["software"] == [software("cpu")] for r in result["runs"]) and f"trained with {software('cpu')}\n" in text
    assert "| mnist | 1% | adaptive | 1 |" in text and "| DiffAugment, BigGAN, CIFAR-10 10 % | 39.78 | 22.4 (-44 %) |" in text


@pytest.mark.parametrize("benchmark", ["data_limited", "collapse"])
def test_cuda_without_a_cuda_device_is_a_usage_error_before_any_run(benchmark, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    with pytest.raises(SystemExit) as exit_info:
        import_benchmark(benchmark).main(["--tiny", "--device", "cuda", "--out", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_longer_invocation_continues_the_runs_in_out_exactly(tmp_path):
    """--out keeps finished runs; asked for more steps, the benchmark resumes them, which trains
    the same generator and p curve as a run that long from the start, and bills both invocations."""
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    import torch

    from gancore import trainlog
    from gancore.io import torch_load

    data_limited = import_benchmark("data_limited")

    def bench(out: Path, steps: str) -> dict:
        args = ["--tiny", "--data", "mnist", "--policy", "held_out", "--workers", "1", "--steps", steps]
        with contextlib.redirect_stdout(io.StringIO()):
            assert data_limited.main([*args, "--json", str(tmp_path / "r.json"), "--out", str(out)]) == 0
        return json.loads((tmp_path / "r.json").read_text())

    short, continued, straight = (bench(tmp_path / d, n)["runs"][0] for d, n in (("a", "4"), ("a", "8"), ("b", "8")))
    assert (short["continued_from"], continued["continued_from"], straight["continued_from"]) == (None, 4, None)
    assert continued["steps"] == straight["steps"] == 8 and continued["cpu_min"] > short["cpu_min"]
    # Asked for fewer steps than a run in --out has (its scoring failed after training, say), the
    # benchmark scores it as it is rather than refusing it.
    again = bench(tmp_path / "a", "4")["runs"][0]
    assert (again["steps"], again["continued_from"], again["fid"]) == (8, 8, continued["fid"])
    # Both lengths in one invocation (--steps 4,8): a table at each, the second continuing the first.
    rounds = bench(tmp_path / "c", "4,8")["rounds"]
    assert [r["steps"] for r in rounds] == [4, 8] and [r["runs"][0]["continued_from"] for r in rounds] == [None, 4]
    assert rounds[0]["runs"][0]["fid"] == short["fid"] and rounds[1]["runs"][0]["fid"] == straight["fid"]
    run_a, run_b, run_c = (tmp_path / d / "mnist" / "0.01-held_out-0" for d in ("a", "b", "c"))
    state_a, state_b, state_c = (torch_load(r / "models" / "generator.pt")["state_dict"] for r in (run_a, run_b, run_c))
    assert state_a.keys() == state_b.keys() and all(
        torch.equal(state_a[k], state_b[k]) and torch.equal(state_c[k], state_b[k]) for k in state_a
    )
    log_a, log_b = (trainlog.read(r / "metrics" / "train_log.csv") for r in (run_a, run_b))
    # The continued log also keeps the row the short run ended on; every step both logged agrees,
    # but for the wall clock and G's batch-norm drift, which is measured since the previous row.
    rows_a, rows_b = (
        {row["step"]: {k: v for k, v in row.items() if k not in ("seconds", "bn_drift_g")} for row in log} for log in (log_a, log_b)
    )
    assert 8 in rows_b and {s: rows_a[s] for s in rows_b} == rows_b
    assert continued["fid"] == straight["fid"] and continued["p_final"] == straight["p_final"]
    # A run continued on another install names both: only on both is it reproduced bit for bit.
    import shutil

    from gancore.device import software
    from gancore.io import read_json, write_json

    shutil.copytree(tmp_path / "a", tmp_path / "d")
    spent = tmp_path / "d" / "mnist" / "0.01-held_out-0" / "benchmark_run.json"
    assert read_json(spent)["software"] == [software("cpu")]
    write_json(spent, {**read_json(spent), "software": ["torch 2.11.0, another install"]})
    assert bench(tmp_path / "d", "10")["runs"][0]["software"] == ["torch 2.11.0, another install", software("cpu")]
    # Scored again without training a step: no install added. A record from before installs were
    # recorded names its unknown one.
    write_json(spent, {k: v for k, v in read_json(spent).items() if k != "software"})
    assert bench(tmp_path / "d", "10")["runs"][0]["software"] == [data_limited.UNRECORDED]
    assert bench(tmp_path / "d", "12")["runs"][0]["software"] == [data_limited.UNRECORDED, software("cpu")]


def test_first_seed_trains_the_same_run_as_a_longer_list_of_seeds(tmp_path):
    """--first-seed K runs seeds K, K+1, ...: the run of seed 1 alone is the run of seed 1 among 0
    and 1 (more seeds for a table whose first ones ran elsewhere); no seed at all is exit 2."""
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    import torch

    from gancore.io import torch_load

    data_limited = import_benchmark("data_limited")

    def bench(out: str, *seeds: str) -> list[dict]:
        args = ["--tiny", "--data", "mnist", "--policy", "adaptive", "--workers", "1", *seeds]
        with contextlib.redirect_stdout(io.StringIO()):
            assert data_limited.main([*args, "--json", str(tmp_path / f"{out}.json"), "--out", str(tmp_path / out)]) == 0
        return json.loads((tmp_path / f"{out}.json").read_text())["runs"]

    both, alone = bench("both", "--seeds", "2"), bench("alone", "--seeds", "1", "--first-seed", "1")
    assert sorted(r["seed"] for r in both) == [0, 1] and [r["seed"] for r in alone] == [1]
    assert not (tmp_path / "alone" / "mnist" / "0.01-adaptive-0").exists()
    one = next(r for r in both if r["seed"] == 1)
    assert (alone[0]["fid"], alone[0]["p_final"]) == (one["fid"], one["p_final"])
    a, b = (torch_load(tmp_path / d / "mnist" / "0.01-adaptive-1" / "models" / "generator.pt")["state_dict"] for d in ("both", "alone"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for bad in (["--seeds", "0"], ["--first-seed", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            data_limited.main(["--tiny", *bad, "--out", str(tmp_path / "bad")])
        assert exit_info.value.code == 2
    assert not (tmp_path / "bad").exists()


def test_a_reference_prepared_with_other_settings_is_prepared_again(tmp_path):
    """--out keeps the reference classifier for later invocations, but only for the same data
    settings: a --tiny folder must not lend its yardstick to a full-size invocation."""
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    data_limited = import_benchmark("data_limited")
    tiny = [*data_limited.TINY, "data.classifier_epochs=1", "device=cpu"]
    made_with = tmp_path / "mnist" / "reference" / "reference_settings.json"
    assert data_limited.reference("mnist", str(tmp_path), tiny, data_limited.TINY_SIZE) > 0
    assert data_limited.reference("mnist", str(tmp_path), tiny, data_limited.TINY_SIZE) == 0.0  # reused
    assert data_limited.reference("mnist", str(tmp_path), [*tiny, "data.n_test=200"], data_limited.TINY_SIZE) > 0
    assert json.loads(made_with.read_text())["data"]["n_test"] == 200


def test_until_picks_the_longest_length_the_time_left_allows():
    """--until: from the last round's slowest run, a warm step's pace, the rest of its training
    stage as start-up and its scoring with a half margin, in four fifths of the time left; whole
    thousands of steps, or none."""
    next_length = import_benchmark("data_limited").next_length
    rounds = [
        {"steps": 2000, "continued_from": None, "train_wall_s": 50.0, "score_wall_s": 4.0, "pace_s": 0.02},  # 10 s start-up
        {"steps": 2000, "continued_from": None, "train_wall_s": 30.0, "score_wall_s": 6.0, "pace_s": 0.01},
    ]
    # (0.8 * 250 - 10 - 1.5 * 6) / 0.02 = 9050 more steps: 9000.
    assert next_length(rounds, 250.0) == 11000
    assert next_length(rounds, 47.0) is None  # 1,000 more would take 20 s after 19 s of start-up and scoring: 39 s > 0.8 * 47
    # A round that trained nothing (runs scored as an earlier invocation left them) has no pace.
    assert next_length([{**rounds[0], "continued_from": 2000, "pace_s": None}], 250.0) is None
    # A run without a pace (too few log rows) is paced by its whole training stage.
    assert next_length([{**rounds[0], "pace_s": None}], 250.0) == 9000  # (200 - 0 - 6) / 0.025 = 7760 more


def test_settings_the_benchmark_owns_cannot_be_overridden(tmp_path, capsys):
    """-S passes parameters to every run, but not the ones a run's record is keyed by: those have
    options of their own (a -S train.steps would train to one length and record another)."""
    data_limited = import_benchmark("data_limited")
    for setting in ("train.steps=5", "seed=3", "device=cpu"):
        with pytest.raises(SystemExit) as exit_info:
            data_limited.main(["--tiny", "-S", setting, "--out", str(tmp_path / "runs")])
        assert exit_info.value.code == 2
        assert f"-S {setting}: the benchmark sets" in capsys.readouterr().err
    # --policy sets augment.*: a -S there would train augmented runs and label them "none".
    for setting in ("augment.signal=r_t", "augment.adaptive=false"):
        with pytest.raises(SystemExit) as exit_info:
            data_limited.main(["--tiny", "--policy", "none", "-S", setting, "--out", str(tmp_path / "runs")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"-S {setting}: each --policy sets augment.adaptive, augment.signal itself (--policy none, fixed" in err
        assert "-S may set the augmented policies' transforms (augment.policy) and the adaptive rule's augment.kimg" in err
    with pytest.raises(SystemExit) as exit_info:
        data_limited.main(["--tiny", "-S", "train.bogus=1", "--out", str(tmp_path / "runs")])
    assert exit_info.value.code == 2 and "train.bogus: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    # What only the data can refuse (a held-out split too small to steer p) is a usage error too.
    code = data_limited.main(["--tiny", "--data", "mnist", "--policy", "held_out", "-S", "data.n_test=10", "--out", str(tmp_path / "runs")])
    assert code == 2
    assert "raise data.n_test, lower train.batch_size, or use augment.signal=r_t" in capsys.readouterr().err


def test_the_adaptive_rules_pace_may_be_set_and_reaches_the_augmented_runs(tmp_path, capsys):
    """-S augment.kimg (100, the default before ADA's 500, say) is how a policy runs, not which one:
    the benchmark takes it, and the adaptive run trains with it while the unaugmented one stays
    unaugmented."""
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    from gancore.io import torch_load

    data_limited = import_benchmark("data_limited")
    args = ["--tiny", "--data", "mnist", "--policy", "none", "--policy", "adaptive", "-S", "augment.kimg=100", "--workers", "1"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert data_limited.main([*args, "--out", str(tmp_path / "runs")]) == 0
    identity = {
        p: torch_load(tmp_path / "runs" / "mnist" / f"0.01-{p}-0" / "checkpoints" / "last.pt")["identity"] for p in ("none", "adaptive")
    }
    assert identity["adaptive"]["augment"]["kimg"] == 100 and identity["adaptive"]["augment"]["adaptive"] is True
    assert "augment" not in identity["none"]  # augmentation off: no augment.* setting defines the run
    # Continued under other settings, a run would be refused mid-way by gan train: the benchmark
    # refuses the invocation first, naming the run and both settings, and trains nothing.
    checkpoint = tmp_path / "runs" / "mnist" / "0.01-adaptive-0" / "checkpoints" / "last.pt"
    before = checkpoint.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        data_limited.main([*args[:-4], "--steps", "8", "--out", str(tmp_path / "runs")])
    assert exit_info.value.code == 2 and checkpoint.read_bytes() == before
    err = capsys.readouterr().err
    assert (
        "mnist/0.01-adaptive-0 was trained with -S augment.kimg=100, this invocation gives -S (none)" in err and "give another --out" in err
    )
    # A record from before runs kept their settings: training itself refuses the run, and the
    # benchmark prints that error (exit 1), not a worker's traceback.
    from gancore.io import read_json, write_json

    spent = tmp_path / "runs" / "mnist" / "0.01-adaptive-0" / "benchmark_run.json"
    write_json(spent, {k: v for k, v in read_json(spent).items() if k != "settings"})
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            data_limited.main(["--tiny", "--data", "mnist", "--policy", "adaptive", "--steps", "8", "--out", str(tmp_path / "runs")]) == 1
        )
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint ") and "augment.kimg: 100.0 in the checkpoint, 500.0 now" in err and "Traceback" not in err


def test_s_augment_policy_chooses_the_augmented_runs_transforms_and_leaves_the_unaugmented_ones_alone():
    """-S augment.policy=...,geometric trains every augmented policy with those transforms; the none
    runs stay unaugmented, and their record names no augment.* setting, so a none run in --out
    continues under any choice of them while an augmented one continues only under its own."""
    data_limited = import_benchmark("data_limited")
    sets = ["device=cpu", "augment.policy=color,geometric", "augment.kimg=500"]
    built = {p: data_limited._params("mnist", 0.1, p, 0, 10, sets, 60_000).augment for p in data_limited.SETTINGS}
    assert built["none"].policy == "" and built["none"].adaptive is False
    assert {built[p].policy for p in ("fixed", "adaptive", "held_out")} == {"color,geometric"}
    assert built["adaptive"].adaptive and built["held_out"].signal == "held_out" and built["fixed"].adaptive is False
    assert data_limited._defining(sets, "none") == []
    assert data_limited._defining(sets, "adaptive") == ["augment.policy=color,geometric", "augment.kimg=500"]
