"""The ``gan evaluate`` stage: score generated samples against held-out real data.

Both sets go through one classifier (``evaluate.classifier``): the domain classifier trained
during ``prepare`` (for ring8/grid25 the exact Gaussian posterior over the centres), or Inception.
From its outputs:

* **class probabilities** -> Inception Score of the generated and of the real set (the real one
  is the ceiling this classifier allows), and the class histograms behind KL and JS;
* **features** (domain penultimate layer, Inception pool, or the 2D coordinates themselves) ->
  FID, KID, improved precision/recall, density/coverage, and the JSD lower bound of a freshly
  trained discriminator (:mod:`gancore.evaluation_jsd`).

Histograms are of **argmax** predictions, not of mean probabilities. Argmax counts are the mode
histogram of the reference protocols (PacGAN/VEEGAN assign each sample to one mode; stacked
MNIST counts digit triples), so KL/JS here are read in "modes". Mean probabilities would blur a
collapsed generator whose samples sit between modes into a spuriously diverse histogram.

KL(generated || real) is +inf when the generator puts mass on a class the real held-out set
never hits. We keep the mathematics rather than smooth it away: ``kl_divergence`` is then null
and ``kl_divergence_note`` names the classes; JS (always finite, at most log 2) carries the
comparison in that case. ``evaluate.json`` is strict JSON: any other non-finite value becomes
null and is listed in ``non_finite_metrics``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from gancore.config import Params
from gancore.data.settings import real_count_problems
from gancore.errors import EvaluationError, GanCoreError, ParamsError
from gancore.figures import HEADLINE_EVALUATE, METRICS
from gancore.io import write_json
from gancore.layout import Layout
from gancore.metrics.inputs import MetricInputs, seeded_subset
from gancore.provenance import card
from gancore.seeds import derive

# What the stage returns: the evaluate figures of gancore.figures.FIGURES.
HEADLINE = HEADLINE_EVALUATE


def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    """Score ``samples/samples.pt`` against the prepared test split; write ``metrics/evaluate.json``.

    Returns the headline numbers (see :data:`HEADLINE`); the file holds every metric.
    """
    from gancore.classifiers import classify
    from gancore.data.prepared import load_prepared
    from gancore.device import resolve_device

    ev = params.evaluate
    prepared = load_prepared(layout.prepared)
    generated = _load_generated(layout)
    _check_generated(params, prepared.meta, generated)

    # The reference split, and the other one, which stands in for a faithful generator.
    on_train = ev.reference == "train"
    reference, other = (prepared.train, prepared.test) if on_train else (prepared.test, prepared.train)
    idx = _real_subset(len(reference), ev.max_real, params.seed)
    real = reference[idx]  # uint8 images stay uint8: classify converts them batch by batch
    _check_counts(params, len(generated), len(prepared.train), len(prepared.test))

    device = resolve_device(params.device)
    classifier = _load_classifier(params, layout, prepared, device)
    pixels = PixelSpace(prepared, params.seed) if classifier is None else None

    def embed(x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        return pixels.embed(x) if pixels is not None else classify(classifier, x, ev.batch_size, device)

    gen_probs, gen_feat = embed(generated)
    real_probs, real_feat = embed(real)
    del generated, real

    result: dict[str, Any] = {
        "classifier": ev.classifier if pixels is None else None,
        "classifier_test_accuracy": None
        if real_probs is None or not real_probs.shape[1]
        else _classifier_accuracy(ev.classifier, prepared, idx, real_probs, ev.reference),
        "feature_space": _feature_space(params, classifier) if pixels is None else pixels.name,
        "n_generated": len(gen_feat),
        "n_real": len(real_feat),
        "splits": ev.splits,
        "seed": params.seed,
    }
    if gen_probs is not None and real_probs is not None and gen_probs.shape[1] != real_probs.shape[1]:
        raise EvaluationError(
            f"the classifier gave {gen_probs.shape[1]} classes for generated samples but {real_probs.shape[1]} for real data"
        )
    # The k-NN metrics on 10k x 10k float64 distances take minutes on a CPU, seconds on a GPU.
    # (Not on MPS, which has no float64.)
    metric_device = device if device.type == "cuda" else torch.device("cpu")

    def training_features(n: int) -> torch.Tensor:
        return embed(other[_real_subset(len(other), n, params.seed + 1)])[1]

    inputs = MetricInputs(
        real_feat.to(metric_device),
        gen_feat.to(metric_device),
        real_probs,
        gen_probs,
        ev,
        params.seed,
        training_features,
        faithful_split="test" if on_train else "training",
    )
    result.update(run_metrics(inputs))
    if not inputs.has_probabilities:
        result["probability_note"] = (
            (
                f"{prepared.meta.get('name')} has no class labels, so no domain classifier: the Inception Score and the class "
                "divergences need one (evaluate.classifier=inception with its weights); the feature metrics use pixel components"
            )
            if pixels is not None
            else f"{getattr(classifier, 'weights', ev.classifier)} carry no classifier layer: features only (FID, KID, "
            "precision/recall), no Inception Score; torch-fidelity's weights in torch hub's cache add the logits"
        )
    result["provenance"] = card(params, prepared, (pixels or classifier).describe(), len(real_feat), len(gen_feat), device)

    result = strict_json(result)
    write_json(layout.evaluate_json, result)
    return {key: result[key] for key in HEADLINE}


# -- the registered metrics ---------------------------------------------------------------------


def run_metrics(inputs: MetricInputs) -> dict[str, Any]:
    """Every metric of :data:`gancore.figures.METRICS`, in order; one that needs class
    probabilities the classifier does not give reports its figures as null."""
    out: dict[str, Any] = {}
    for metric in METRICS.values():
        if metric.needs == "probabilities" and not inputs.has_probabilities:
            out.update(dict.fromkeys(metric.keys))
        else:
            out.update(metric.function()(inputs))
    return out


def strict_json(result: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats -> null, listed in ``non_finite_metrics``; verifies strict JSON."""
    bad = [key for key, value in result.items() if isinstance(value, float) and not math.isfinite(value)]
    if result.get("fid_curve"):
        result = {**result, "fid_curve": [[n, v if math.isfinite(v) else None] for n, v in result["fid_curve"]]}
    out = {key: (None if key in bad else value) for key, value in result.items()}
    out["non_finite_metrics"] = ", ".join(bad) if bad else None
    json.dumps(out, allow_nan=False)  # raises if anything non-JSON slipped through
    return out


# -- inputs and checks ---------------------------------------------------------------------------


def _load_generated(layout: Layout) -> torch.Tensor:
    path = layout.samples_file
    if not path.exists():
        raise EvaluationError(f"{path} is missing: run `gan sample` first")
    from gancore.sampling import load_samples

    return load_samples(layout)


def _check_generated(params: Params, meta: dict[str, Any], generated: torch.Tensor) -> None:
    if meta.get("name") != params.data.name:
        raise EvaluationError(
            f"the prepared data are {meta.get('name')!r} but data.name is {params.data.name!r}: run `gan prepare` with these parameters"
        )
    shape = tuple(meta["shape"])
    if tuple(generated.shape[1:]) != shape:
        raise EvaluationError(
            f"generated samples have shape {tuple(generated.shape[1:])} but the prepared data {meta.get('name')!r} "
            f"have shape {shape}: re-run `gan train` and `gan sample` with the current parameters"
        )
    bad = int((~torch.isfinite(generated.reshape(len(generated), -1))).any(1).sum())
    if bad:
        raise EvaluationError(f"{bad} of {len(generated)} generated samples contain NaN or inf: the generator diverged; retrain it")


def _check_counts(params: Params, n_gen: int, n_train: int, n_test: int) -> None:
    """Counts the settings leave too small (exit 2, before any feature is computed): the samples,
    and the real examples (:func:`real_count_problems`)."""
    ev = params.evaluate
    problems: list[tuple[str, str]] = []
    if n_gen < ev.splits:
        problems.append(
            (
                "sample.n",
                f"{n_gen} generated samples cannot fill evaluate.splits={ev.splits}: draw at least {ev.splits} or lower evaluate.splits",
            )
        )
    k = max(ev.pr_k, ev.dc_k)
    if n_gen <= k:
        problems.append(
            (
                "sample.n",
                f"{n_gen} generated samples are too few for {k} nearest neighbours (evaluate.pr_k / evaluate.dc_k): need more than {k}",
            )
        )
    problems += real_count_problems(params, n_train, n_test)
    if problems:
        raise ParamsError(problems)


class PixelSpace:
    """Features for unlabelled images, which have no domain classifier: the leading principal
    components of the flattened pixels (fitted on the training split), where FID, KID and the
    k-NN metrics compare generated and real images. Comparable between runs on the same data,
    not with any paper: set ``evaluate.classifier: inception`` for that."""

    COMPONENTS = 64
    FIT_POINTS = 5000

    def __init__(self, prepared: Any, seed: int):
        from gancore.data.prepared import to_model_range

        train = prepared.train
        pick = _real_subset(len(train), self.FIT_POINTS, seed + 3)
        x = to_model_range(train[pick]).flatten(1)
        self.mean = x.mean(0)
        q = min(self.COMPONENTS, x.shape[0], x.shape[1])
        # pca_lowrank's random projection comes from the global generator: seeded here, or the
        # basis (and the scores) would follow whatever ran before in the process (a flow runs
        # train and evaluate in one).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive(seed, "evaluate/pixel-pca"))
            _, _, self.basis = torch.pca_lowrank(x - self.mean, q=q, center=False, niter=4)
        self.name, self.seed = f"pixels:pca{q}", seed

    def describe(self) -> dict[str, str]:
        """The provenance card's fields, as :meth:`gancore.classifiers.base.Classifier.describe`."""
        return {
            "feature_network": self.name,
            "weights": f"principal components of the training split (seed {self.seed})",
            "resize": "none (prepared size)",
            "input_range": "[-1, 1]",
        }

    def embed(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        from gancore.data.prepared import to_model_range

        out = [(to_model_range(x[i : i + 1024]).flatten(1) - self.mean) @ self.basis for i in range(0, len(x), 1024)]
        return None, torch.cat(out)


def _real_subset(n: int, max_real: int | None, seed: int) -> torch.Tensor:
    """Indices of the real held-out examples to compare with: all, or a seeded draw of max_real."""
    return seeded_subset(n, max_real, seed)


def _load_classifier(params: Params, layout: Layout, prepared: Any, device: torch.device) -> Any:
    from gancore.classifiers import load_classifier

    name, meta = params.evaluate.classifier, prepared.meta
    info = meta.get("classifier") or {}
    if name == "domain" and meta.get("kind") == "image" and (not info or info.get("kind") == "none") and prepared.train_labels is None:
        return None  # unlabelled images: no classifier can exist; the feature metrics use PixelSpace
    if name == "domain" and meta.get("kind") == "image" and (not info or info.get("kind") == "none"):
        fix = "set evaluate.classifier=inception (or inception_tf for the papers' protocol)"
        if prepared.test_labels is None:
            why = f"the {meta.get('name')} data have no class labels, so `gan prepare` trained no domain classifier"
        else:
            why = f"`gan prepare` trained no domain classifier ({info.get('reason') or 'data.classifier_epochs=0?'})"
            fix += ", or re-run `gan prepare` with data.classifier_epochs > 0"
        raise EvaluationError(f"evaluate.classifier=domain is not available: {why}; {fix}")
    try:
        return load_classifier(name, layout, device=device)
    except GanCoreError:
        raise
    except (FileNotFoundError, ImportError, OSError) as exc:
        raise EvaluationError(f"classifier {name!r} is not available ({exc}); try another evaluate.classifier") from exc


def _classifier_accuracy(name: str, prepared: Any, idx: torch.Tensor, real_probs: torch.Tensor, reference: str = "test") -> float | None:
    """The domain classifier's test accuracy as `prepare` recorded it; else measured here on the
    evaluated real subset when it has mode labels. None for Inception (ImageNet accuracy says
    nothing about this data set)."""
    if name != "domain":
        return None
    value = (prepared.meta.get("classifier") or {}).get("test_accuracy")
    if value is not None:
        return float(value)
    all_labels = prepared.train_labels if reference == "train" else prepared.test_labels
    if all_labels is None:
        return None
    labels = all_labels[idx]
    return float((real_probs.argmax(1) == labels).double().mean())


def _feature_space(params: Params, classifier: Any) -> str:
    if params.data_kind == "vector":
        return f"coordinates:{classifier.feature_dim}"
    return f"{params.evaluate.classifier}:{classifier.feature_dim}"
