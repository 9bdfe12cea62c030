"""Multi-process training with DistributedDataParallel: two CPU processes over gloo, started the
way users start them (torchrun, or train.devices=2 which launches it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gancore import trainlog
from helpers import venv_env, write_params

pytestmark = pytest.mark.xdist_group("distributed")


def gan(root, *args, timeout=600):
    env = venv_env()
    return subprocess.run(
        [sys.executable, "-m", "gancore.cli", *args, "--params", str(root / "params.yaml"), "--out", str(root)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def torchrun(root, *args, faults=None, timeout=600):
    env = venv_env(GANCORE_FAULTS=faults) if faults else venv_env()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "gancore.cli",
            "train",
            "--params",
            str(root / "params.yaml"),
            "--out",
            str(root),
            *args,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_PREPARED: dict[str, Path] = {}  # params.yaml text -> a project prepared with it in this session


def project(tmp_path, name, **sections):
    """A project with these parameters and its data prepared; a configuration already prepared in
    this session is copied (the same parameters prepare the same data, bit for bit)."""
    root = tmp_path / name
    root.mkdir()
    write_params(root / "params.yaml", device="cpu", tracking={"enabled": False}, **sections)
    key = (root / "params.yaml").read_text()
    if key in _PREPARED:
        shutil.copytree(_PREPARED[key] / "data", root / "data")
        return root
    done = gan(root, "prepare")
    assert done.returncode == 0, done.stderr
    _PREPARED[key] = root
    return root


def weights(root):
    return {name: torch.load(root / "models" / name, weights_only=True)["state_dict"] for name in ("generator.pt", "discriminator.pt")}


def same(a, b):
    return all(a[n].keys() == b[n].keys() and all(torch.equal(a[n][k], b[n][k]) for k in a[n]) for n in a)


# The mlp generator from PyTorch's initialisation (option init=torch), the dynamics the tolerances
# below were measured on: from He's (the default) G starts spread at the data's scale, D's values
# are larger, and loss_d, a difference of two such means, drifted 2e-3 relative by step 10 of the
# penalty's run, float summation order amplified; p, steered towards 0.2, ended at 0.
TORCH_INIT = {"arch": "mlp", "options": {"init": "torch"}}
RING = {
    "model": TORCH_INIT,
    "train": {"steps": 60, "batch_size": 128, "checkpoint_every": 20, "log_every": 10, "monitor_every": 20, "lr_g": 2e-4, "lr_d": 2e-4},
}
# Adaptive augmentation on top: every rank draws the whole batch's jitter and keeps its share, and
# p moves on the r_t summed over the ranks. An interval of 3 leaves r_t sums pending at every
# checkpoint (steps 20 and 40), which the resume must carry once, not once per rank.
AUGMENTED = {**RING, "augment": {"policy": "jitter", "adaptive": True, "target": 0.2, "kimg": 2, "interval": 3}}


def test_two_gloo_processes_train_resume_after_sigkill_and_follow_one_process(tmp_path):
    single = project(tmp_path, "single", **AUGMENTED)
    assert gan(single, "train").returncode == 0
    two = project(tmp_path, "two", **AUGMENTED)
    launched = gan(two, "train", "-S", "train.devices=2")  # train.devices launches torchrun
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
    assert "processes           2" in launched.stdout

    # torchrun by hand, killed (SIGKILL, every rank) between two checkpoints, then run again.
    killed = project(tmp_path, "killed", **AUGMENTED)
    first = torchrun(killed, "-S", "train.devices=2", faults="train.step@30=kill")
    assert first.returncode != 0 and (killed / "checkpoints/last.pt").is_file()
    assert torch.load(killed / "checkpoints/last.pt", weights_only=True)["step"] == 20
    again = torchrun(killed, "-S", "train.devices=2")
    assert again.returncode == 0, again.stderr[-3000:]
    # Deterministic: gloo sums in a fixed order, so the resumed run equals the uninterrupted one
    # bit for bit (the replicas' agreement is checked at every checkpoint inside the run).
    assert same(weights(killed), weights(two))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(trainlog.read(killed / "metrics/train_log.csv")) == strip(trainlog.read(two / "metrics/train_log.csv"))

    # Two ranks each take half of every batch and average their gradients: the same gradient as
    # one process on the whole batch, up to the order of float32 sums (~1e-7 relative per step).
    # Over 60 steps of a contracting optimiser that stays far below the losses' own step-to-step
    # movement (~1e-2): 1e-3 relative is a strict bound that summation order alone satisfies.
    a, b = trainlog.read(single / "metrics/train_log.csv"), trainlog.read(two / "metrics/train_log.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss_d", "loss_g", "d_real", "d_fake"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-3), (ra["step"], key)
        # The same transforms on the same samples: r_t (a mean of 3 x 128 signs) and the p it
        # steers agree unless a logit within float error of 0 changes sign.
        assert rb["r_t"] == pytest.approx(ra["r_t"], abs=2 / 384), ra["step"]
        assert rb["augment_p"] == pytest.approx(ra["augment_p"], abs=1e-6), ra["step"]
    assert 0 < a[-1]["augment_p"] < 1, "p must move and stay inside (0, 1) for the comparison to mean anything"


def test_two_processes_with_a_gradient_penalty_follow_one_process(tmp_path):
    """The penalty's interpolation weights: every rank drew only its own share's count from the
    shared stream, so both ranks used the same weights and the stream fell out of step with one
    process's (loss_g 2.85 against 2.62 after 5 steps). They are drawn for the whole batch and
    each rank takes its share, as the latent vectors are. Packed, so the share is in packs.
    Tolerance as above: summation order alone, 1e-3 relative over 10 steps."""
    penalty = {
        "loss": {"name": "wasserstein_gp"},
        "model": {**TORCH_INIT, "pack": 2},
        "train": {"steps": 10, "batch_size": 32, "checkpoint_every": 10, "log_every": 5, "monitor_every": None, "n_critic": 2},
    }
    single = project(tmp_path, "gp-single", **penalty)
    assert gan(single, "train").returncode == 0
    two = project(tmp_path, "gp-two", **penalty)
    done = torchrun(two, "-S", "train.devices=2")
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = trainlog.read(single / "metrics/train_log.csv"), trainlog.read(two / "metrics/train_log.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [5, 10]
    for ra, rb in zip(a, b):
        for key in ("loss_d", "loss_g"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-3), (ra["step"], key)


def test_two_gloo_processes_train_a_tiny_dcgan(tmp_path):
    sections = {
        "data": {"name": "mnist", "n_train": 512, "n_test": 256, "classifier_epochs": 0},
        "model": {"arch": "dcgan", "latent_dim": 16, "options": {"width": 8}},
        "train": {"steps": 6, "batch_size": 32, "checkpoint_every": 3, "log_every": 3, "monitor_every": None},
    }
    root = project(tmp_path, "dcgan", **sections)
    done = torchrun(root)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = trainlog.read(root / "metrics/train_log.csv")
    assert [r["step"] for r in rows] == [3, 6]
    assert torch.load(root / "checkpoints/last.pt", weights_only=True)["identity"]["world_size"] == 2
    single = project(tmp_path, "dcgan-single", **sections)
    assert gan(single, "train").returncode == 0
    # Batch norm's statistics are per rank on CPUs (SyncBatchNorm needs GPUs), so the runs are not
    # the same run; they start from the same weights and data, and after 3 small steps both
    # discriminators still sit near chance (loss_d near 2 log 2 = 1.39).
    first_single = trainlog.read(single / "metrics/train_log.csv")[0]
    print("dcgan step 3 loss_d: 2 ranks", rows[0]["loss_d"], "1 process", first_single["loss_d"])
    assert abs(rows[0]["loss_d"] - first_single["loss_d"]) < 0.01


def test_a_checkpoint_resumes_only_at_its_world_size(tmp_path):
    root = project(tmp_path, "size", **RING)
    assert gan(root, "train", "-S", "train.steps=20").returncode == 0
    done = torchrun(root)
    assert done.returncode != 0 and "world_size" in done.stderr and "--restart" in done.stderr
