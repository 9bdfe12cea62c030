"""The tracking tests' one tiny pipeline, tracked stage by stage as ``gan <stage>`` runs it."""

from __future__ import annotations

import pytest

from gancore import tracking
from gancore.config import load_params
from gancore.layout import Layout
from gancore.stages import STAGE_ORDER, run_stage
from helpers import write_params


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    params = load_params(write_params(root / "params.yaml"))
    layout = Layout(root)
    for stage in STAGE_ORDER:
        run_stage(stage, params, layout, tracking.FileHandedRecorder(str(root), "cli"))
    return params, layout, tracking.current_run_id(layout)
