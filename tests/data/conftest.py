"""Fixtures the prepare-stage tests share: the offline MNIST mirror, and one extracted copy of MNIST
for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gancore.data.raw import load_torchvision
from gancore.layout import DATASETS_ENV
from helpers import REPO


def find_mirror() -> Path | None:
    for candidate in (os.environ.get(DATASETS_ENV), REPO.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def mirror(monkeypatch) -> Path:
    path = find_mirror()
    if path is None:
        pytest.skip(f"no offline MNIST mirror ({DATASETS_ENV} unset and no ../shared/datasets)")
    monkeypatch.setenv(DATASETS_ENV, str(path))
    return path


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def mnist_raw(tmp_path_factory) -> Path:
    """One extracted copy of MNIST, shared by the tests that do not test fetching itself."""
    path = find_mirror()
    if path is None:
        pytest.skip("no offline MNIST mirror")
    raw = tmp_path_factory.mktemp("shared") / "raw"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATASETS_ENV, str(path))
        load_torchvision("mnist", raw)
    return raw
