"""Helpers the test modules share (fixtures live in conftest.py): paths, tiny parameters,
subprocess environments, free ports, the ring8 protocol's centres, the keys of evaluate.json."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
PARAMS = REPO / "params.yaml"

# The tiny configuration every orchestration test runs (ring8 + mlp: seconds on a CPU).
TINY = {
    "data": {"name": "ring8", "n_train": 2000, "n_test": 1000},
    "train": {"steps": 50, "batch_size": 128, "checkpoint_every": 25, "log_every": 5, "monitor_every": 25},
    "sample": {"n": 500},
    "evaluate": {"max_real": 1000},
    "diagnose": {"ndb_bins": 20},
    "mixture": {"enabled": False},  # a single GAN; the mixture has tests of its own
    "tracking": {"enabled": True, "experiment": "gancore-tests"},
}


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_params(path: Path, **sections) -> Path:
    """params.yaml of the repository with the tiny configuration (and ``sections``) merged in."""
    tree = deep_merge(deep_merge(yaml.safe_load(PARAMS.read_text()), TINY), sections)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


POLL_SECONDS = {"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_RUNNER_POLL_FREQUENCY": "2"}


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's scripts (gan, dvc, prefect) first on PATH,
    one torch thread per process (the tests' processes share two cores); workers and served
    deployments that look for scheduled runs every 2 s rather than Prefect's 10 (a test waits
    for each pick-up; users keep Prefect's default)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **POLL_SECONDS, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ring8_centers() -> list[list[float]]:
    """The PacGAN ring's centres, from the product's own definition."""
    from gancore.data.toy import ring8

    return ring8().centers.tolist()


# -- tiny training runs: an MLP of width 16 on 256 ring points, a few steps ----------------------------
def ring_data(n_train: int = 256, n_test: int = 128, seed: int = 0):
    """Ring points with sigma 0.05 (wider than the protocol's, so a few steps already land some)."""
    import torch

    from gancore.data.prepared import PreparedData

    centers = ring8_centers()
    gen = torch.Generator().manual_seed(seed)

    def points(n):
        labels = torch.randint(8, (n,), generator=gen)
        return torch.tensor(centers)[labels] + 0.05 * torch.randn(n, 2, generator=gen), labels

    train, train_labels = points(n_train)
    test, test_labels = points(n_test)
    meta = {
        "name": "ring8",
        "kind": "vector",
        "shape": [2],
        "count": n_train,
        "count_test": n_test,
        "value_range": [-1, 1],
        "storage": "float32",
        "seed": seed,
        "modes": {"count": 8, "definition": "nearest centre", "centers": centers, "sigma": 0.05},
        "raw_sha256": {},
    }
    return PreparedData(meta, train, test, train_labels, test_labels)


def make_layout(root, data=None):
    from gancore.data.prepared import save_prepared
    from gancore.layout import Layout

    layout = Layout(root)
    save_prepared(layout.prepared, data if data is not None else ring_data())
    return layout


def make_params(loss: str = "non_saturating", hidden: int = 16, model: dict | None = None, **train):
    from gancore.config import validate

    tree = {
        "seed": 3,
        "device": "cpu",
        "data": {"name": "ring8", "n_train": 256, "n_test": 128},
        "model": {"arch": "mlp", "latent_dim": 4, "options": {"hidden": hidden, "depth": 2, "batch_norm": True}, **(model or {})},
        "loss": {"name": loss},
        "train": {"steps": 6, "batch_size": 32, "checkpoint_every": 3, "log_every": 2, **train},
        "sample": {"n": 64, "batch_size": 32},
        "mixture": {"enabled": False},
        "tracking": {"enabled": False},
    }
    return validate(tree)


# -- a real browser ----------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-output" / "screenshots"
# Chromium in a closed network: no background traffic, no sandbox (root in CI), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def browser_page(playwright, width: int = 1800, height: int = 1200):
    """A page of Debian's headless Chromium driven by Playwright (its own browser download is
    unreachable here): ``executable_path``."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser, browser.new_page(viewport={"width": width, "height": height})


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def import_benchmark(name: str):
    """A module of benchmarks/ (a folder of scripts, not a package), imported by name."""
    import importlib

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def image_meta(name: str, shape: list[int], count: int, count_test: int, modes: dict, **extra) -> dict:
    """meta.json of a prepared image set (uint8 storage, model range [-1, 1], seed 0), for tests
    that build prepared data by hand."""
    meta = {"name": name, "kind": "image", "shape": shape, "count": count, "count_test": count_test, "value_range": [-1, 1]}
    return {**meta, "storage": "uint8", "seed": 0, "modes": modes, "raw_sha256": {}, **extra}


def overrides(*settings: str) -> list[str]:
    """``-S key=value`` arguments of the CLI, one pair per setting."""
    return [arg for setting in settings for arg in ("-S", setting)]


# -- the evaluate stage ---------------------------------------------------------------------------
# Keys evaluate.json must always hold (values may be null where documented).
EVALUATE_KEYS = {
    "fid_infinity",
    "fid_slope",
    "fid_curve",
    "provenance",
    "knn_n",
    "precision_faithful",
    "recall_faithful",
    "density_faithful",
    "coverage_faithful",
    "faithful_reference",
    "classifier",
    "classifier_test_accuracy",
    "feature_space",
    "n_generated",
    "n_real",
    "splits",
    "seed",
    "is_mean",
    "is_std",
    "is_real_mean",
    "is_real_std",
    "num_classes",
    "classes_generated",
    "classes_real",
    "kl_divergence",
    "kl_divergence_note",
    "kl_to_uniform",
    "js_divergence",
    "js_distance",
    "fid",
    "kid_mean",
    "kid_std",
    "kid_subset_size",
    "precision",
    "recall",
    "pr_k",
    "density",
    "coverage",
    "dc_k",
    "js_lower_bound",
    "js_lower_bound_v_hat",
    "js_lower_bound_se",
    "js_lower_bound_n_train",
    "js_lower_bound_n_test",
    "non_finite_metrics",
}


# -- points files: prepared as `gan prepare` does, and a sample's mode report against them ---------


def prepared_points(folder: Path, x, seed: int = 0):
    """The rows ``x`` (a numpy array) saved as a points file in ``folder`` and prepared (at most 50 clusters)."""
    import numpy as np

    from gancore.data.points import prepare_points

    np.save(folder / "points.npy", x)
    return prepare_points(str(folder / "points.npy"), seed, None, None, 50)


def mode_report(data, points) -> dict:
    """The mode report of ``points`` (a numpy array in the file's units) against ``data``'s clusters."""
    import torch

    from gancore.diagnostics.modes import reference_labels, vector_modes

    units = data.meta["units"]
    z = (torch.from_numpy(points) - torch.tensor(units["mean"])) / torch.tensor(units["std"])
    return vector_modes(z, data.meta["modes"], real_labels=reference_labels(data))


def cli_stages(out, sets: list[str], stages=("prepare", "train", "sample")):
    """``stages`` by the CLI (``gan <stage>`` on the repository's params.yaml) into ``out``, each
    with ``-S`` ``sets``; their layout."""
    from gancore.cli import main
    from gancore.layout import Layout

    for stage in stages:
        assert main([stage, "--params", str(PARAMS), "--out", str(out), *[a for s in sets for a in ("-S", s)]]) == 0, stage
    return Layout(out)


def state_equal(a: dict, b: dict) -> bool:
    """Two state dicts with the same keys and bit-identical tensors."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
