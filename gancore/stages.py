"""The five pipeline stages: one definition each, shared by the CLI, DVC and Prefect.

Each stage reads files and parameters under a :class:`Layout`, writes files, and returns a small
JSON-able summary. Heavy modules are imported inside the functions so that importing this module
(and ``gan --help``) stays cheap.
"""

from __future__ import annotations

from typing import Any, Callable

from gancore.config import Params
from gancore.layout import Layout

STAGE_ORDER = ("prepare", "train", "sample", "evaluate", "diagnose")


def prepare(params: Params, layout: Layout) -> dict[str, Any]:
    from gancore.data import prepare_data

    return prepare_data(params, layout)


def train(params: Params, layout: Layout, restart: bool = False) -> dict[str, Any]:
    from gancore.training import train as run_training

    return run_training(params, layout, restart=restart)


def sample(params: Params, layout: Layout) -> dict[str, Any]:
    from gancore.sampling import sample as run_sampling

    return run_sampling(params, layout)


def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    from gancore.evaluation import evaluate as run_evaluation

    return run_evaluation(params, layout)


def diagnose(params: Params, layout: Layout) -> dict[str, Any]:
    from gancore.diagnostics import diagnose as run_diagnosis

    return run_diagnosis(params, layout)


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "prepare": prepare,
    "train": train,
    "sample": sample,
    "evaluate": evaluate,
    "diagnose": diagnose,
}
