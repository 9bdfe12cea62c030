"""The ``prepare`` stage: raw inputs -> ``data/prepared/`` (see :mod:`gancore.data.prepared`).

Everything is built in memory first; only then are the outputs written, each atomically, with
``meta.json`` last so that a reader never pairs new tensors with an old description.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from gancore.config import Params
from gancore.data.prepared import CLASSIFIER_FILE, DATA_FILE, META_FILE, PreparedData, save_prepared
from gancore.data.settings import recorded
from gancore.errors import DataError, ParamsError
from gancore.io import write_json
from gancore.layout import MIXTURE_FILE, Layout


def build_data(params: Params, layout: Layout) -> PreparedData:
    """The prepared data set for ``params`` in memory (raw inputs are fetched into ``layout.raw``)."""
    d, spec = params.data, params.dataset
    # The builder is imported by name, so that 2D data never import torchvision.
    data = spec.builder()(spec, params, layout)
    if spec.labelled and data.train_labels is None:
        raise DataError(f"the builder of {d.name} ({spec.build}) returned no labels, but its spec says the examples are labelled")
    modes = (data.meta.get("modes") or {}).get("count")
    if spec.modes is not None and modes != spec.modes:
        raise DataError(f"the builder of {d.name} ({spec.build}) described {modes} modes, but its spec says {spec.modes}")
    shape = list(data.train.shape[1:])
    if tuple(shape) != params.data_shape:
        raise DataError(f"{d.name} was built with shape {shape}, but the parameters imply {list(params.data_shape)}")
    data.meta = {
        "name": d.name,
        "kind": params.data_kind,
        "shape": shape,
        "count": len(data.train),
        "count_test": len(data.test),
        "storage": "uint8" if params.data_kind == "image" else "float32",
        "seed": params.seed,
        # Identifies the parameters that produced this set; later stages check them (gancore.data.settings).
        "data_digest": params.digest("seed", "data"),
        "settings": recorded(params),
        **data.meta,
    }
    return data


def prepare_data(params: Params, layout: Layout, inputs_read: Callable[[], None] | None = None) -> dict[str, Any]:
    """The ``prepare`` stage: write ``data.pt``, ``meta.json`` and, when asked, the domain classifier.

    ``inputs_read`` is called once the data have been read and checked, before anything is written
    (:func:`gancore.stages.run_stage` opens the stage's record there).
    """
    start = time.perf_counter()
    root = layout.root.absolute()
    made = [d for d in (*reversed(root.parents), root, root / "data", layout.raw.absolute()) if not d.exists()]
    layout.raw.mkdir(parents=True, exist_ok=True)  # a DVC output even for synthetic data (then empty)
    try:
        data = build_data(params, layout)
        from gancore.partition import partition_problems

        problems = partition_problems(params, data)  # refused now, before the old outputs are replaced
        if problems:
            raise ParamsError(problems)
        if inputs_read is not None:
            inputs_read()
    except BaseException:
        for folder in reversed(made):  # bad input leaves no folder behind (a download's files stay)
            if folder.is_dir() and not any(folder.iterdir()):
                with contextlib.suppress(OSError):  # another process's file arrived meanwhile
                    folder.rmdir()
        raise
    try:
        run_facts, mixture = _write_prepared(params, layout, data)
    except BaseException:
        # Interrupted or failed half-way: nothing may look prepared (train and sample took a
        # data.pt and meta.json without their classifier or partition, and evaluate then blamed
        # data.classifier_epochs).
        _remove_prepared(layout)
        raise
    summary: dict[str, Any] = {
        "name": data.meta["name"],
        "kind": data.kind,
        "shape": "x".join(str(s) for s in data.shape),
        "count": data.meta["count"],
        "count_test": data.meta["count_test"],
        "modes": data.num_modes if data.num_modes is not None else "unknown",
    }
    accuracy = data.meta.get("classifier", {}).get("test_accuracy")
    if accuracy is not None:
        summary["classifier_test_accuracy"] = accuracy
    if "cache" in run_facts:
        summary["classifier_cache"] = run_facts["cache"]
    if mixture is not None:
        summary["mixture_parts"] = len(mixture["parts"])
        summary["mixture_method"] = mixture["method"] + (" (part count by BIC)" if mixture.get("chosen_by") == "bic" else "")
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def _write_prepared(params: Params, layout: Layout, data: PreparedData) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Replace the prepared outputs: the tensors, the domain classifier and the partition, with
    ``meta.json`` rewritten last; returns the classifier's run facts and the partition."""
    out = layout.prepared
    # An older description, classifier or partition must not outlive the tensors it described.
    _remove_prepared(layout)
    save_prepared(out, data)
    # A mixture posterior (vector data) needs no training: those data always get theirs.
    if params.data.classifier_epochs > 0 or params.dataset.classifier == "gaussian_posterior":
        from gancore.classifiers.domain import fit_domain_classifier

        info = fit_domain_classifier(data, params, out)
        # Timings and cache hits differ between identical runs; meta.json must not, so that the
        # same parameters and code give the same data version (DVC hash) whoever runs prepare.
        run_facts: dict[str, Any] = {k: info.pop(k) for k in ("seconds", "fit_seconds", "cache") if k in info}
        data.meta["classifier"] = info
        write_json(out / META_FILE, data.meta)
    else:
        run_facts = {}
    mixture = None
    if params.mixture.enabled:
        from gancore.partition import copy_classifier, prepare_parts

        mixture = prepare_parts(params, layout, data)
        for part in mixture["parts"]:
            copy_classifier(layout, part["index"])
        # The partition in the data's description too (its count and, for parts=auto, the curve
        # it was chosen from); meta.json is written last, as everywhere in prepare.
        data.meta["mixture"] = {k: v for k, v in mixture.items() if k != "parts"} | {"parts": len(mixture["parts"])}
        write_json(out / META_FILE, data.meta)
    return run_facts, mixture


def _remove_prepared(layout: Layout) -> None:
    """Every prepared output, the description first (what marks the data as prepared)."""
    import shutil

    out = layout.prepared
    for name in (META_FILE, DATA_FILE, CLASSIFIER_FILE, MIXTURE_FILE):
        (out / name).unlink(missing_ok=True)
    if (out / "parts").is_dir():
        shutil.rmtree(out / "parts")
