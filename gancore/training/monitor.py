"""The collapse monitor: a cheap diagnosis of the generator while it trains.

Every ``train.monitor_every`` steps the generator (the EMA one when EMA is on) maps one fixed latent
batch to samples, in eval mode and without gradients, so neither the weights nor any random stream
of training change: a run with the monitor on trains exactly as one with it off. From the samples:

* known modes (2D centres; the domain classifier's classes or digit triples for images): modes
  covered and the high-quality fraction, by the protocols of :mod:`gancore.diagnostics.modes`, on
  the PacGAN sample size for 2D data (2,500) and 500 images otherwise;
* else: the pairwise-distance ratio and the near-duplicate rate against a fixed real subset
  (classifier features where there is a classifier, pixels otherwise);
* where a points file's rows outside every cluster are tested as a mode, where the samples there
  go and how they spread (:mod:`gancore.diagnostics.outside`): the training rows' cells and rows
  are fitted once, at the start.

The verdict rules of :mod:`gancore.diagnostics.verdict` decide whether the figures show collapse
(complete or partial); anything else counts as healthy here (a young generator is "not converged"
but not collapsed). Each check also saves the fixed-z picture under ``plots/progress/``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gancore import seeds
from gancore.data.prepared import PreparedData, to_model_range, to_uint8

MONITOR_STREAM = "train/monitor"
VECTOR_SAMPLES = 2500  # PacGAN's protocol size
IMAGE_SAMPLES = 500
PAIRWISE_POINTS = 500
# The fewest held-out points the monitor compares samples with: two halves (the near-duplicate
# rate calibrates on one, checks the other) of a mode's minimum each (diversity.MIN_PER_MODE).
FEWEST_HELD_OUT = 20
# The fewest real points the pairwise and near-duplicate measures compare with (two per half).
FEWEST_COMPARED = 4
GRID_IMAGES = 64
BATCH = 500
COLLAPSE_VERDICTS = ("complete_collapse", "partial_collapse", "intra_mode_collapse")
# Column prefix in the training log (and the MLflow metric group).
PREFIX = "monitor/"


def _keeping_global_rng(init: Callable[..., None]) -> Callable[..., None]:
    """The monitor is built between the models' seeding and training: building the image
    classifier's network draws its initial weights from torch's global generator, which a plugin's
    dropout reads in training, so a run with the monitor would train otherwise than one without."""

    @functools.wraps(init)
    def build(self: Any, *args: Any, **kwargs: Any) -> None:
        with torch.random.fork_rng(devices=[]):
            init(self, *args, **kwargs)

    return build


class CollapseMonitor:
    @_keeping_global_rng
    def __init__(
        self,
        data: PreparedData,
        prepared_dir: Path,
        latent_dim: int,
        seed: int,
        device: torch.device,
        confidence: float = 0.9,
        duplicate_fraction: float = 0.05,
        held_out_steers: bool = False,
        boundary: float | None = 0.0,
        ndb_bins: int | None = None,
    ) -> None:
        from gancore.background import tested_background
        from gancore.diagnostics.modes import reference_labels
        from gancore.diagnostics.outside import outside_cells, outside_rows
        from gancore.heldout import measured_half
        from gancore.seeds import subset

        self.device = device
        self.kind = data.kind
        self.confidence = confidence
        self.duplicate_fraction = duplicate_fraction
        self.seed = seed
        self.boundary = boundary  # D's decision boundary under the loss (gancore.losses.boundary)
        n = VECTOR_SAMPLES if self.kind == "vector" else IMAGE_SAMPLES
        self.z = torch.randn(n, latent_dim, generator=seeds.generator(seed, MONITOR_STREAM))
        modes = data.meta.get("modes") or {}
        self.modes = modes
        self.centers, self.sigma = modes.get("centers"), modes.get("sigma")
        self.value_range = data.meta.get("value_range")
        self.test_labels = data.test_labels
        self.all_labels = reference_labels(data)
        # As `gan diagnose` does (it tested them, the monitor did not: a generator squeezing the flat
        # rows into the box's middle was healthy here and partial_collapse there), with the
        # diagnosis's resolution (diagnose.ndb_bins)
        background = tested_background(modes) if self.kind == "vector" else None
        if ndb_bins is None:
            from gancore.config import DiagnoseParams

            ndb_bins = DiagnoseParams().ndb_bins
        self.outside_cells = None if background is None else outside_cells(data.train, background, ndb_bins, seed)
        self.outside_rows = None if background is None else outside_rows(data.train, background, seed)
        # A mixture part is judged on the known centres its own training data lie at: against all
        # of ring8's, a part that learned its one mode perfectly covered "1 of 8" and was collapsed.
        self.support = None
        if data.meta.get("part") and self.centers and self.sigma:
            from gancore.diagnostics.modes import assign_2d

            labels = (
                data.train_labels if data.train_labels is not None else torch.from_numpy(assign_2d(data.train, self.centers, self.sigma)[0])
            )
            self.support = sorted(int(c) for c in torch.unique(labels))
        self.mode_count = modes.get("count")
        self.labels = modes.get("labels")
        self.classifier = None
        # Stacked MNIST's protocol (per-channel digits) follows from its classifier, not from a
        # count of 1000: an image folder of 1000 classes is labelled images.
        self.stacked = (data.meta.get("classifier") or {}).get("kind") == "stacked_cnn"
        if self.kind == "image" and (data.meta.get("classifier") or {}).get("kind") not in (None, "none"):
            from gancore.classifiers.domain_networks import load_domain_classifier

            self.classifier = load_domain_classifier(prepared_dir).to(device)
        # Fixed training and held-out subsets: is D memorising its training data (its "real" calls
        # on seen against unseen examples)? (gancore.diagnostics.memorisation; where held-out
        # examples steer the augmentation, the half that does not)
        self.memorisation_data = PreparedData(
            data.meta,
            subset(data.train, PAIRWISE_POINTS, seed, "train/monitor-memo-train"),
            subset(measured_half(data.test) if held_out_steers else data.test, PAIRWISE_POINTS, seed, "train/monitor-memo-test"),
        )
        # Twice the compared points: the near-duplicate rate calibrates on one half, checks the other.
        # A part no held-out point falls in is compared with its own training points: its test
        # split is the whole data set's, whose spread would make a healthy part look collapsed.
        # So is a part with too few of them: a cluster of 25 rows beside 3,000 had 3, and the
        # near-duplicate measure, which needs 4, stopped training with an error (a single GAN on
        # under 200 rows too: its monitor and `gan diagnose` then compare with different points).
        few = len(data.test) < FEWEST_HELD_OUT
        own = data.train if data.meta.get("own_test") is False or few else data.test
        real = subset(own, 2 * PAIRWISE_POINTS, seed, "train/monitor-real")
        real_probs, self.real_features = self._features(to_model_range(real))
        self.real_probs = real_probs
        # The real points' modes, for the spread inside each mode (where the modes are known).
        self.real_modes = self._modes(to_model_range(real), real_probs) if self.known_modes else None
        # the quality floor the diagnosis reads: held-out real data under the same protocol (fixed:
        # measured once, not at every check)
        self.high_quality_real = None
        if self.real_modes is not None:
            from gancore.diagnostics.image_modes import real_quality

            self.high_quality_real = real_quality(real_probs, self.real_modes, self.stacked, confidence)

    @property
    def known_modes(self) -> bool:
        if self.kind == "vector":
            return bool((self.centers and self.sigma) or (self.modes.get("means") and self.modes.get("variances")))
        return (
            self.classifier is not None
            and self.mode_count is not None
            and (self.classifier.num_classes == self.mode_count and (self.test_labels is not None or self.stacked))
        )

    @torch.no_grad()
    def samples(self, generator: nn.Module) -> torch.Tensor:
        """The fixed-z samples (float, model range, CPU); the generator's train/eval mode is kept."""
        was_training = generator.training
        generator.eval()
        try:
            out = [generator(self.z[i : i + BATCH].to(self.device)).float().cpu() for i in range(0, len(self.z), BATCH)]
        finally:
            generator.train(was_training)
        return torch.cat(out)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(class probabilities or None, the points the distance measures use)."""
        if self.classifier is None:
            return None, x.flatten(1)
        from gancore.classifiers import classify

        probs, features = classify(self.classifier, x, BATCH, self.device)
        return probs, features

    def _modes(self, x: torch.Tensor, probs: torch.Tensor | None) -> torch.Tensor | None:
        """Each point's mode (-1: not high quality) under the diagnosis's protocol."""
        from gancore.diagnostics.image_modes import labelled_assignments
        from gancore.diagnostics.modes import vector_assignments

        if self.kind == "vector":
            return vector_assignments(x, self.modes)
        if probs is None:
            return None
        return probs.argmax(1) if self.stacked else labelled_assignments(probs, self.confidence)

    def measure(self, generator: nn.Module) -> tuple[dict[str, Any], torch.Tensor]:
        """(figures, samples) for the generator as it is now."""
        started = time.perf_counter()
        x = self.samples(generator)
        figures = self.score(x)
        figures["seconds"] = time.perf_counter() - started
        return figures, x

    def score(self, x: torch.Tensor) -> dict[str, Any]:
        """The monitor's figures for samples ``x`` (float, model range): also how a mixture's
        samples, gathered from its parts, are judged against the whole data set."""
        from gancore.diagnostics.diversity import collapse_measures, dispersion
        from gancore.diagnostics.image_modes import modes_labelled, modes_stacked
        from gancore.diagnostics.modes import OUTSIDE_FIGURES, REPORT_FIGURES, vector_modes

        figures: dict[str, Any] = {}
        probs, feats = self._features(x)
        report = None
        if self.kind == "vector" and self.known_modes:
            report = vector_modes(x, self.modes, real_labels=self.all_labels, support=self.support)
        elif self.known_modes and probs is not None:
            report = (
                modes_stacked(probs, self.confidence)
                if self.stacked
                else modes_labelled(probs, self.test_labels, self.confidence, self.labels, real_probs=self.real_probs)
            )
        if report is not None and self.real_modes is not None:
            gen_modes = self._modes(x, probs)
            assert gen_modes is not None
            spread = dispersion(feats, self.real_features, gen_modes, self.real_modes, report["modes_total"])
            figures.update(
                {k: spread[k] for k in ("dispersion_ratio", "dispersion_se_log", "dispersion_min", "dispersion_min_mode") if k in spread}
            )
        # Always, known modes or not, as the diagnosis does: without them a generator collapsed to
        # one point off every mode was "not converged" to the monitor and complete_collapse to
        # `gan diagnose`, and was never stopped or rolled back.
        # (Not for a part of fewer than 4 rows, two or three stray rows close together, which
        # the measures cannot compare with: training stopped there with an error.)
        measured = (
            collapse_measures(feats, self.real_features, self.duplicate_fraction, self.seed, PAIRWISE_POINTS)
            if len(self.real_features) >= FEWEST_COMPARED
            else {}
        )
        figures.update(
            {
                k: measured[k]
                for k in (
                    "pairwise_distance_ratio",
                    "duplicate_rate",
                    "real_duplicate_rate",
                    "duplicate_quantile",
                    "duplicate_points",
                    "duplicate_neighbour",
                    "duplicate_z",
                )
                if k in measured
            }
        )
        if report is not None and self.high_quality_real is not None:
            figures["high_quality_real"] = self.high_quality_real
        if report is not None:
            figures.update({k: report[k] for k in REPORT_FIGURES})
            figures.update({k: report.get(k) for k in OUTSIDE_FIGURES})
        if self.outside_cells is not None:
            figures.update(self.outside_cells.short(x))
        if self.outside_rows is not None:
            figures.update(self.outside_rows.duplicates(x, self.duplicate_fraction, self.seed) or {})
        return figures

    @staticmethod
    def judge(figures: dict[str, Any]) -> str:
        """The diagnosis verdict these figures alone support."""
        from gancore.diagnostics.verdict import decide

        return decide(figures)["verdict"]

    def discriminator_figures(self, discriminator: nn.Module, pack: int) -> dict[str, Any]:
        """D's "real" calls on fixed training vs held-out examples: the gap, r_t on training data, and
        the AUC of D's logits (training against held-out)."""
        from gancore.diagnostics.memorisation import counts, summarise

        if self.memorisation_data.meta.get("own_test") is False or len(self.memorisation_data.test) < FEWEST_HELD_OUT:
            # a part no held-out example falls in: the whole test split is other parts' data, which
            # its D has never met either way, so "unseen" would not mean "held out"; with a few,
            # the gap and the AUC are a coin's (one held-out point: -1, 0 or 1)
            return {}
        was_training = discriminator.training
        discriminator.eval()
        try:
            m = summarise([counts(discriminator, self.memorisation_data, pack, self.seed, boundary=self.boundary)])
        finally:
            discriminator.train(was_training)
        return {} if m is None else {"d_gap": m["gap"], "r_t_train": m["r_t_train"], "d_auc": m["auc"]}

    def keep(self, x: torch.Tensor, path: Path) -> None:
        """The samples themselves (images as uint8), for a mixture to judge its parts together."""
        from gancore.io import torch_save

        torch_save({"x": to_uint8(x) if self.kind == "image" else x}, path)

    def picture(self, x: torch.Tensor, path: Path) -> None:
        from gancore.pictures import save_image_grid, save_points

        if self.kind == "vector":
            extent = tuple(self.value_range) if self.value_range else None
            save_points(x, path, self.centers or self.modes.get("means"), extent)
        else:
            save_image_grid(to_uint8(x[:GRID_IMAGES]), path)


def log_columns(figures: dict[str, Any], verdict: str) -> dict[str, Any]:
    """The monitor's figures as training-log cells (``monitor/<figure>``)."""
    # Not its running time: the log of a resumed run must equal an uninterrupted run's.
    keep = (
        "modes_covered",
        "high_quality_fraction",
        "mode_kl",
        "outside_share",
        "outside_short",
        "outside_cells_short",
        "outside_duplicate_rate",
        "dispersion_ratio",
        "pairwise_distance_ratio",
        "duplicate_rate",
        "d_gap",
        "r_t_train",
        "d_auc",
    )
    # (a flag as 0 / 1, as the collapse column: a curve)
    cells = {PREFIX + k: int(v) if isinstance(v, bool) else v for k in keep if (v := figures.get(k)) is not None}
    cells[PREFIX + "collapse"] = int(verdict in COLLAPSE_VERDICTS)
    return cells
