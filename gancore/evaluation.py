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
from gancore.errors import EvaluationError, GanCoreError
from gancore.evaluation_jsd import js_lower_bound
from gancore.io import write_json
from gancore.layout import Layout
from gancore.metrics.fid_infinity import fid_infinity
from gancore.provenance import card
from gancore.ranking import HEADLINE_EVALUATE

# What the stage returns: the evaluate figures of gancore.ranking.FIGURES.
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

    idx = _real_subset(len(prepared.test), ev.max_real, params.seed)
    real = prepared.test[idx]  # uint8 images stay uint8: classify converts them batch by batch
    _check_counts(params, len(generated), len(real))

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
        else _classifier_accuracy(ev.classifier, prepared, idx, real_probs),
        "feature_space": _feature_space(params, classifier) if pixels is None else pixels.name,
        "n_generated": len(gen_feat),
        "n_real": len(real_feat),
        "splits": ev.splits,
        "seed": params.seed,
    }
    if gen_probs is not None and real_probs is not None and gen_probs.shape[1] > 0:
        result.update(probability_metrics(gen_probs, real_probs, splits=ev.splits, seed=params.seed))
    else:
        result.update(
            {key: None for key in ("is_mean", "is_std", "is_real_mean", "is_real_std", "kl_divergence", "js_divergence", "js_distance")}
        )
        result["probability_note"] = (
            (
                f"{prepared.meta.get('name')} has no class labels, so no domain classifier: the Inception Score and the class "
                "divergences need one (evaluate.classifier=inception with its weights); the feature metrics use pixel components"
            )
            if pixels is not None
            else f"{getattr(classifier, 'weights', ev.classifier)} carry no classifier layer: features only (FID, KID, "
            "precision/recall), no Inception Score; torch-fidelity's weights in torch hub's cache add the logits"
        )
    # The k-NN metrics on 10k x 10k float64 distances take minutes on a CPU, seconds on a GPU.
    # (Not on MPS, which has no float64.)
    metric_device = device if device.type == "cuda" else torch.device("cpu")
    result.update(feature_metrics(real_feat.to(metric_device), gen_feat.to(metric_device), pr_k=ev.pr_k, dc_k=ev.dc_k, seed=params.seed))
    # What a faithful generator scores on the k-NN metrics at this n: training examples in its place.
    n_knn = result["knn_n"]
    train_idx = _real_subset(len(prepared.train), n_knn, params.seed + 1)
    _, train_feat = embed(prepared.train[train_idx])
    faithful = knn_metrics(real_feat.to(metric_device), train_feat.to(metric_device), pr_k=ev.pr_k, dc_k=ev.dc_k, seed=params.seed)
    result.update({f"{k}_faithful": faithful[k] for k in ("precision", "recall", "density", "coverage")})
    result["faithful_reference"] = f"{len(train_feat)} training examples in place of generated samples, against the same real ones"
    result.update(fid_infinity(real_feat.to(metric_device), gen_feat.to(metric_device), seed=params.seed))
    result.update(js_lower_bound(real_feat, gen_feat, seed=params.seed).as_dict())
    result["provenance"] = card(params, prepared, classifier, result["feature_space"], len(real_feat), len(gen_feat), layout)

    result = strict_json(result)
    write_json(layout.evaluate_json, result)
    return {key: result[key] for key in HEADLINE}


# -- metrics on classifier outputs ---------------------------------------------------------------


def class_histogram(probs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Share of samples whose most probable class is k, for k < num_classes (float64, sums to 1)."""
    from gancore.metrics import label_histogram

    return label_histogram(torch.as_tensor(probs).argmax(1), num_classes)


def probability_metrics(gen_probs: torch.Tensor, real_probs: torch.Tensor, *, splits: int, seed: int) -> dict[str, Any]:
    """Inception Score of both sets and KL/JS between their argmax histograms."""
    from gancore.metrics import inception_score, js_distance, js_divergence, kl_divergence

    if gen_probs.shape[1] != real_probs.shape[1]:
        raise EvaluationError(
            f"the classifier gave {gen_probs.shape[1]} classes for generated samples but {real_probs.shape[1]} for real data"
        )
    k = gen_probs.shape[1]
    is_mean, is_std = inception_score(gen_probs, splits=splits, seed=seed)
    is_real_mean, is_real_std = inception_score(real_probs, splits=splits, seed=seed)
    p_gen, p_real = class_histogram(gen_probs, k), class_histogram(real_probs, k)

    unseen = ((p_gen > 0) & (p_real == 0)).nonzero().flatten().tolist()
    if unseen:
        kl, note = (
            None,
            (
                f"KL(generated || real) is +inf: generated samples fall in class(es) {_short_list(unseen)} "
                f"(a share of {float(p_gen[unseen].sum()):.4g} of them) which no real held-out example hits; see js_divergence"
            ),
        )
    else:
        kl, note = kl_divergence(p_gen, p_real), None
    return {
        "is_mean": is_mean,
        "is_std": is_std,
        "is_real_mean": is_real_mean,
        "is_real_std": is_real_std,
        "num_classes": k,
        "classes_generated": int((p_gen > 0).sum()),
        "classes_real": int((p_real > 0).sum()),
        "kl_divergence": kl,
        "kl_divergence_note": note,
        # KL(generated || uniform): the quantity the stacked-MNIST tables report (there the 1000
        # modes are uniform by construction); the 2D tables of PacGAN count only high-quality
        # samples, which `gan diagnose` does.
        "kl_to_uniform": kl_divergence(p_gen, torch.full_like(p_gen, 1.0 / k)),
        "js_divergence": js_divergence(p_gen, p_real),
        "js_distance": js_distance(p_gen, p_real),
    }


def equal_sizes(real_feat: torch.Tensor, gen_feat: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets cut to the smaller one's size (seeded subsets): the k-NN metrics' radii shrink
    with n, so precision/recall and density/coverage compare equal numbers of real and generated
    points, as their papers do (coverage of a faithful 2D generator: ~0.97 at equal n, ~0.65 with
    10,000 real against 2,500 generated)."""
    n = min(len(real_feat), len(gen_feat))
    return real_feat[_real_subset(len(real_feat), n, seed)], gen_feat[_real_subset(len(gen_feat), n, seed + 2)]


def knn_metrics(real_feat: torch.Tensor, gen_feat: torch.Tensor, *, pr_k: int, dc_k: int, seed: int) -> dict[str, Any]:
    """Improved precision/recall and density/coverage at equal n (:func:`equal_sizes`)."""
    from gancore.metrics import density_coverage, precision_recall

    real_n, gen_n = equal_sizes(real_feat, gen_feat, seed)
    precision, recall = precision_recall(real_n, gen_n, k=pr_k)
    density, coverage = density_coverage(real_n, gen_n, k=dc_k)
    return {
        "precision": precision,
        "recall": recall,
        "pr_k": pr_k,
        "density": density,
        "coverage": coverage,
        "dc_k": dc_k,
        "knn_n": len(real_n),
    }


def feature_metrics(real_feat: torch.Tensor, gen_feat: torch.Tensor, *, pr_k: int, dc_k: int, seed: int) -> dict[str, Any]:
    """FID, KID (all points), improved precision/recall and density/coverage (equal n) in one feature space."""
    from gancore.metrics import fid, kid

    subset = min(1000, len(gen_feat), len(real_feat))
    kid_mean, kid_std = kid(real_feat, gen_feat, subsets=100, subset_size=subset, seed=seed)
    return {
        "fid": fid(real_feat, gen_feat),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": subset,
        **knn_metrics(real_feat, gen_feat, pr_k=pr_k, dc_k=dc_k, seed=seed),
    }


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


def _check_counts(params: Params, n_gen: int, n_real: int) -> None:
    ev = params.evaluate
    if n_gen < ev.splits:
        raise EvaluationError(
            f"{n_gen} generated samples cannot fill evaluate.splits={ev.splits}: draw at least {ev.splits} (sample.n) or lower evaluate.splits"
        )
    if n_real < ev.splits:
        raise EvaluationError(
            f"{n_real} real held-out examples cannot fill evaluate.splits={ev.splits}: raise data.n_test / evaluate.max_real or lower evaluate.splits"
        )
    k = max(ev.pr_k, ev.dc_k)
    for what, n in (("generated samples", n_gen), ("real held-out examples", n_real)):
        if n <= k:
            raise EvaluationError(f"{n} {what} are too few for {k} nearest neighbours (evaluate.pr_k / evaluate.dc_k): need more than {k}")


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
        _, _, self.basis = torch.pca_lowrank(x - self.mean, q=q, center=False, niter=4)
        self.name = f"pixels:pca{q}"

    def embed(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        from gancore.data.prepared import to_model_range

        out = [(to_model_range(x[i : i + 1024]).flatten(1) - self.mean) @ self.basis for i in range(0, len(x), 1024)]
        return None, torch.cat(out)


def _real_subset(n: int, max_real: int | None, seed: int) -> torch.Tensor:
    """Indices of the real held-out examples to compare with: all, or a seeded draw of max_real."""
    if max_real is None or n <= max_real:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_real].sort().values


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


def _classifier_accuracy(name: str, prepared: Any, idx: torch.Tensor, real_probs: torch.Tensor) -> float | None:
    """The domain classifier's test accuracy as `prepare` recorded it; else measured here on the
    evaluated real subset when it has mode labels. None for Inception (ImageNet accuracy says
    nothing about this data set)."""
    if name != "domain":
        return None
    value = (prepared.meta.get("classifier") or {}).get("test_accuracy")
    if value is not None:
        return float(value)
    if prepared.test_labels is None:
        return None
    labels = prepared.test_labels[idx]
    return float((real_probs.argmax(1) == labels).double().mean())


def _feature_space(params: Params, classifier: Any) -> str:
    if params.data_kind == "vector":
        return f"coordinates:{classifier.feature_dim}"
    return f"{params.evaluate.classifier}:{classifier.feature_dim}"


def _short_list(items: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
