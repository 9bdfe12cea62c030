"""Where each diagnostic measures, and the measuring itself: the figures of ``diagnose.json``.

* mode protocols: the mixture centres for ring8/grid25, the mixture prepare fitted to a points
  file, the domain classifier's probabilities for images (see :mod:`gancore.diagnostics.modes`);
* distances (complete collapse, near duplicates, data copying): the coordinates of vector data,
  the domain classifier's features for images (flattened pixels when there is no classifier);
* dispersion inside modes: per mode in the same space (the quality-filtered samples of each
  mode); for data without known modes, per NDB bin;
* NDB: raw coordinates / flattened pixels, as the NDB paper does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gancore.background import tested_background
from gancore.classifiers.domain_networks import StackedDigitClassifier
from gancore.config import Params
from gancore.data.prepared import PreparedData, to_model_range
from gancore.diagnostics.diversity import collapse_measures, data_copying, dispersion
from gancore.diagnostics.image_modes import labelled_assignments, modes_labelled, modes_stacked, real_quality
from gancore.diagnostics.modes import reference_labels, vector_assignments, vector_modes
from gancore.diagnostics.ndb import NDB_MAX_REAL, ndb
from gancore.diagnostics.outside import outside_duplicates, short_outside_cells
from gancore.layout import Layout
from gancore.seeds import subset

# The copy test searches every training point for each sample's nearest (a copy of a point left
# out reads as a fresh sample), up to this much memory for the points in its space (float32):
# every training image of the built-in sets; pixels of a large image folder are subsampled, and
# copy_train_share says so.
COPY_TRAIN_BYTES = 2**30
# Held-out real points the diagnosis measures on: the pairwise measures and the copy test draw
# their own n from them; the spread per mode takes them all (Stacked MNIST's 1,000 modes need tens
# of points each: 4,000 held-out images left about 8 modes with the 10 it asks of each).
MAX_REAL = 50_000


@dataclass
class Space:
    """Generated and real points in one space, and the mode of each (-1: not counted)."""

    name: str
    generated: torch.Tensor
    real: torch.Tensor  # held-out real points (2n of them: calibration and control)
    train: torch.Tensor  # training points, for the copy test
    gen_modes: torch.Tensor | None = None
    real_modes: torch.Tensor | None = None
    modes: int = 0
    labels: list[str] | None = None


def _vector(data: PreparedData, samples: torch.Tensor, real: torch.Tensor) -> tuple[dict[str, Any] | None, Space]:
    modes_meta = data.meta.get("modes") or {}
    report = vector_modes(samples, modes_meta, real_labels=reference_labels(data), real_points=data.test_float())
    space = Space("coordinates", samples, to_model_range(real), data.train_float())
    if report is not None:
        space.gen_modes, space.real_modes = vector_assignments(samples, modes_meta), vector_assignments(space.real, modes_meta)
        space.modes, space.labels = report["modes_total"], report["mode_labels"]
        report["high_quality_real"] = float((space.real_modes >= 0).double().mean())
    return report, space


def _copy_train(data: PreparedData, dims: int, seed: int) -> torch.Tensor:
    """The training images the copy test searches: all that fit :data:`COPY_TRAIN_BYTES` as
    ``dims``-D float32 points."""
    return subset(data.train, max(1, COPY_TRAIN_BYTES // (4 * dims)), seed, "diagnose/copy-train-images")


def _image(
    params: Params, data: PreparedData, samples: torch.Tensor, real: torch.Tensor, layout: Layout, device: Any
) -> tuple[dict[str, Any] | None, Space]:
    if not data.meta.get("classifier") or (data.meta.get("classifier") or {}).get("kind") == "none":
        # Without a domain classifier there are no mode assignments; distances fall back to pixels.
        train = _copy_train(data, samples[0].numel(), params.seed)
        space = Space(
            "pixels (no domain classifier in data/prepared)",
            samples.flatten(1),
            to_model_range(real).flatten(1),
            to_model_range(train).flatten(1),
        )
        return None, space
    from gancore.classifiers import classify, load_classifier

    classifier = load_classifier("domain", layout, device)
    bs = params.evaluate.batch_size
    probs, feats = classify(classifier, samples, bs, device)
    real_probs, real_feats = classify(classifier, real, bs, device)
    _, train_feats = classify(classifier, _copy_train(data, classifier.feature_dim, params.seed), bs, device)
    modes_meta = data.meta.get("modes") or {}
    count, confidence = modes_meta.get("count"), params.diagnose.confidence
    report = None
    # Stacked MNIST's protocol follows from its classifier (one digit CNN per channel), not from a
    # count of 1000: an image folder of 1000 classes is labelled images.
    stacked = isinstance(classifier, StackedDigitClassifier)
    if stacked:
        report = modes_stacked(probs, confidence)
    elif count and data.test_labels is not None and classifier.num_classes == count:
        report = modes_labelled(probs, data.test_labels, confidence, modes_meta.get("labels"), real_probs=real_probs)
    space = Space(f"domain classifier features ({classifier.feature_dim}-D)", feats, real_feats, train_feats)
    if report is not None:
        if stacked:
            # Class-conditional spread needs a class per example: the triple of each sample.
            space.gen_modes, space.real_modes = probs.argmax(1), real_probs.argmax(1)
        else:
            space.gen_modes, space.real_modes = labelled_assignments(probs, confidence), labelled_assignments(real_probs, confidence)
        # The quality floor as real images reach it (Stacked MNIST: every channel at the
        # confidence; a fixed 50 % made a faithful generator not_converged where real triples reach 11 %).
        report["high_quality_real"] = real_quality(real_probs, space.real_modes, stacked, confidence)
        space.modes, space.labels = report["modes_total"], report["mode_labels"]
    return report, space


def measure(
    params: Params, data: PreparedData, samples: torch.Tensor, layout: Layout, device: Any
) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """(mode report or None, NDB result, the figures of every other measure)."""
    cfg = params.diagnose
    # Held-out real points (the pairwise measures take twice their n: calibration and control).
    n_real = min(MAX_REAL, len(data.test))
    real = subset(data.test, n_real, params.seed, "diagnose/pairwise-real")
    if data.kind == "vector":
        report, space = _vector(data, samples, real)
    else:
        report, space = _image(params, data, samples, real, layout, device)
    ndb_real = to_model_range(subset(data.train, NDB_MAX_REAL, params.seed, "diagnose/ndb-real"))
    # Pixels on the accelerator; vector points stay on the CPU (cheap, and float64, which MPS lacks).
    ndb_result = ndb(ndb_real, samples, cfg.ndb_bins, cfg.ndb_alpha, params.seed, device=device if data.kind == "image" else "cpu")
    figures: dict[str, Any] = collapse_measures(space.generated, space.real, cfg.duplicate_fraction, params.seed)
    # where the rows outside every cluster are tested as a mode, where the samples there go too
    mixture = tested_background(data.meta.get("modes") or {})
    if mixture is not None:
        figures.update(short_outside_cells(data.train, samples, mixture, cfg.ndb_bins, params.seed) or {})
        figures.update(outside_duplicates(data.train, samples, mixture, cfg.duplicate_fraction, params.seed) or {})
    if space.gen_modes is not None and space.real_modes is not None:
        figures.update(dispersion(space.generated, space.real, space.gen_modes, space.real_modes, space.modes, space.labels))
        figures["dispersion_space"] = f"per mode, {space.name}"
    else:
        # No known modes: the NDB bins stand in for them (each bin a small region of the data).
        from gancore.clustering import nearest

        centres = ndb_result["centers"].double() if data.kind == "vector" else ndb_result["centers"].float()
        flat_s, flat_r = samples.reshape(len(samples), -1).to(centres.dtype), ndb_real.reshape(len(ndb_real), -1).to(centres.dtype)
        figures.update(dispersion(flat_s, flat_r, nearest(flat_s, centres), nearest(flat_r, centres), len(centres)))
        figures["dispersion_space"] = "per NDB bin, " + ("coordinates" if data.kind == "vector" else "pixels")
    figures.update(data_copying(space.generated, space.train, space.real, cfg.duplicate_fraction, params.seed, len(data.train)))
    figures["high_quality_real"] = (report or {}).get("high_quality_real")
    figures["distance_space"] = space.name
    return report, ndb_result, figures
