"""The parts of a mixture of GANs: how ``gan prepare`` splits the data (see :mod:`gancore.mixture`).

* ``mixture.partition: labels`` (``auto`` for labelled images): one part per class;
* ``none`` (``auto`` for unlabelled images): one part, the whole data set;
* ``kmeans`` (``auto`` for vector data): the data's clusters, a Gaussian mixture fitted by EM
  from k-means, in the data's coordinates (vectors) or the leading principal components of the
  pixels (images). A points file's clusters are those prepare found, and its flat rows outside
  every cluster, where they are tested as a mode (:func:`gancore.background.outside_masks`), a
  part of their own (``"background": true``) under ``mixture.parts: auto``. ``mixture.parts: auto`` (the default) takes the number of clusters that
  minimises BIC over 1..``mixture.max_parts`` (:func:`gancore.cluster_selection.select_clusters`), so no
  part count is ever given for a data set; BIC chooses diagonal or full covariances with it, and
  the curves (one per model) are kept in ``mixture.json``, ``meta.json`` and
  ``parts_selection.png``.

Each part becomes a prepared data set of its own under ``data/prepared/parts/partNN/`` (its test
split: the held-out examples of its cluster or class); vector parts are centred and scaled to unit
spread (a fitted cluster's part: its principal axes, each at unit spread; :mod:`gancore.part_space`),
and sampling maps them back.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from gancore.background import outside_masks
from gancore.cluster_selection import fit_mixture, select_clusters
from gancore.clustering import as_points, nearest
from gancore.config import Params, ParamsError
from gancore.data.prepared import PreparedData, save_prepared
from gancore.gaussian_mixture import GaussianMixture
from gancore.io import write_json
from gancore.layout import MIXTURE_FILE, SELECTION_PICTURE, Layout
from gancore.part_space import normalise_part
from gancore.seeds import derive
from gancore.seeds import generator as seeded_generator

KMEANS_RESTARTS = 5
# A points file's flat rows outside every cluster, a part of their own (gancore.background.outside_masks)
FLAT_PART = "the rows outside every cluster"
# Points the part count is chosen on (a seeded subset of the training data): 5,000 pin the BIC
# curve of 2-D data with 25 clusters; the partition itself is fitted on every training point.
SELECT_POINTS = 5000
# Images are clustered in the space of their leading principal components: the clusters of the
# flattened pixels, at a fraction of the cost, and a space where a Gaussian mixture's BIC is defined.
IMAGE_COMPONENTS = 16


def partition_method(params: Params, data: PreparedData) -> str:
    """:func:`method_for` the data's kind; ``labels`` refused for data without class labels."""
    method = method_for(params, data.kind)
    if method == "labels" and data.train_labels is None:
        raise ParamsError([("mixture.partition", f"labels: {data.meta.get('name')} has no class labels; use kmeans (or auto)")])
    return method


def method_for(params: Params, kind: str) -> str:
    """``labels``, ``kmeans`` or ``none``. Under ``auto``: vector data are split into their own
    clusters; images are one part (``none``) unless ``mixture.parts`` asks for a count, which
    k-means makes: their clusters of pixels are colours and layouts rather than modes, and their
    class labels are the very modes the mode count scores, so a default split by labels would
    hand the metric its answer (``partition: labels`` asks for that class-conditional mixture)."""
    method = params.mixture.partition
    if method == "auto":
        return "none" if kind == "image" and params.mixture.parts == "auto" else "kmeans"
    return method


def partition_problems(params: Params, data: PreparedData) -> list[tuple[str, str]]:
    """What :func:`prepare_parts` would refuse for ``data``, for prepare to check before it
    replaces anything (a refusal after the new data were written left them beside no partition)."""
    if not params.mixture.enabled:
        return []
    try:
        method = partition_method(params, data)
    except ParamsError as exc:
        return list(exc.problems)
    parts = params.mixture.parts
    if method == "kmeans" and parts != "auto" and len(data.train) < int(parts):
        return [("mixture.parts", f"{parts} parts for {len(data.train)} training examples; use at most {len(data.train)}")]
    return []


def _points(data: PreparedData, split: str) -> torch.Tensor:
    x = data.train if split == "train" else data.test
    return x.float().reshape(len(x), -1)


def cluster_space(data: PreparedData, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(train, test) rows in the space the parts are clustered in, and its name: the coordinates
    of vector data; for images the leading principal components of the flattened pixels."""
    train, test = as_points(_points(data, "train")), as_points(_points(data, "test"))
    if data.kind == "vector":
        return train, test, "coordinates"
    pick = torch.randperm(len(train), generator=seeded_generator(seed, "mixture/pca"))[:SELECT_POINTS]
    mean = train[pick].mean(0)
    q = min(IMAGE_COMPONENTS, len(pick), train.shape[1])
    # pca_lowrank draws its random projection from the global generator: seeded here, or the
    # basis (and, k-means and a diagonal mixture not being rotation-invariant, the parts) would follow
    # whatever ran before in the process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(seed, "mixture/pca-basis"))
        _, _, v = torch.pca_lowrank(train[pick] - mean, q=q, center=False, niter=4)
    return (train - mean) @ v, (test - mean) @ v, f"first {q} principal components of the pixels"


def choose_parts(params: Params, data: PreparedData, train: torch.Tensor) -> tuple[int, dict[str, Any] | None, GaussianMixture | None]:
    """The part count: ``mixture.parts``, or for ``auto`` the cluster count BIC picks over
    1..``mixture.max_parts`` (for a points file, prepare's clusters: its components grouped by
    density peak, gancore.mode_merging), with the selection's record and the fit it chose (on a
    subset: a start for the final fit)."""
    parts = params.mixture.parts
    if parts != "auto":
        if len(train) < int(parts):
            raise ParamsError([("mixture.parts", f"{parts} parts for {len(train)} training examples; use at most {len(train)}")])
        return int(parts), None, None
    modes = data.meta.get("modes") or {}
    if modes.get("estimated") and modes.get("selection"):
        return int(modes["count"]), modes["selection"], None
    pick = torch.randperm(len(train), generator=seeded_generator(params.seed, "mixture/select"))[:SELECT_POINTS]
    selection = select_clusters(train[pick], params.mixture.max_parts, params.seed, "mixture/select")
    selection.warn_if_at_limit()
    return selection.k, selection.as_dict(), selection.mixture


def cluster_partition(data: PreparedData, params: Params) -> tuple[torch.Tensor, torch.Tensor, list[str], dict[str, Any]]:
    """(train labels, test labels, descriptions, record) of the data's clusters: a Gaussian mixture
    of the chosen size and covariance model (the lower BIC for a given count), fitted by EM from
    the best of :data:`KMEANS_RESTARTS` k-means runs (:func:`gancore.cluster_selection.fit_mixture`);
    each example goes to its most probable component (unlike k-means' nearest centre, this respects
    clusters of unequal widths). A points file's clusters are those prepare found."""
    modes = data.meta.get("modes") or {}
    train, test, space = cluster_space(data, params.seed)
    k, selection, chosen = choose_parts(params, data, train)
    background: tuple[torch.Tensor, torch.Tensor] | None = None
    outside: int | None = None
    if modes.get("estimated") and params.mixture.parts == "auto" and data.train_labels is not None and data.test_labels is not None:
        train_labels, test_labels = data.train_labels, data.test_labels
        background = outside_masks(data)
        outside = None if background is None else int(background[0].sum())
        if outside is not None and outside < 2 * params.model.pack:
            background = None  # too few for a batch of two: folded into one cluster's part, they stay in their clusters'
        if background is not None:
            train_labels, test_labels = (
                torch.where(outside, k, labels) for outside, labels in zip(background, (train_labels, test_labels))
            )
            k += 1
    else:
        covariance = selection["covariance"] if selection and selection.get("covariance") else "auto"
        gmm = fit_mixture(train, k, params.seed, KMEANS_RESTARTS, "mixture/kmeans", covariance, chosen)
        train_labels, test_labels = gmm.predict(train), gmm.predict(test)
    won = len(torch.unique(train_labels))  # a component that won no example is no part
    if won < k:
        warnings.warn(
            f"{k - won} of the {k} clusters won no training example (the mixture's other components are more "
            f"probable everywhere they reach): {won} parts train",
            stacklevel=2,
        )
    # what another model.pack would fold otherwise (mixture.partition_info checks it)
    sizes = sorted([int(c) for c in torch.bincount(train_labels) if c > 0] + ([outside] if outside and background is None else []))
    train_labels, test_labels = _fold_small_clusters(train, test, train_labels, test_labels, 2 * params.model.pack)
    kept = [int(c) for c in torch.unique(train_labels)]
    remap = torch.full((k,), -1, dtype=torch.long)
    remap[kept] = torch.arange(len(kept))
    train_labels, test_labels = remap[train_labels], remap[test_labels]
    descriptions = []
    for i in range(len(kept)):
        if background is not None and kept[i] == k - 1:
            descriptions.append(FLAT_PART)
            continue
        centre = _points(data, "train")[train_labels == i].double().mean(0).tolist() if data.kind == "vector" else None
        descriptions.append(
            f"cluster {i}" + (f" around {[round(v, 4) for v in centre[:4]]}" + ("..." if len(centre) > 4 else "") if centre else "")
        )
    record = {"space": space, "chosen_by": "bic" if selection else "mixture.parts", "selection": selection, "sizes": sizes}
    return train_labels, test_labels, descriptions, record


def _fold_small_clusters(
    train: torch.Tensor, test: torch.Tensor, train_labels: torch.Tensor, test_labels: torch.Tensor, smallest: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clusters with fewer than ``smallest`` training examples (a batch of two packed examples,
    what a part needs to train) joined to the nearest larger cluster's part (by its mean, in the
    clustering space). A stray row is the mixture's background, not a cluster, but a few rows
    close together are one (three rows 0.01 apart, a part of 3 where packing by 2 needs 4); as a
    part, one outlier made the default mixture untrainable."""
    counts = torch.bincount(train_labels)
    small = [c for c in range(len(counts)) if 0 < counts[c] < smallest]
    large = [c for c in range(len(counts)) if counts[c] >= smallest]
    if not small or not large:  # nothing to fold, or nowhere to fold it: check_part_sizes explains
        return train_labels, test_labels
    points = as_points(train).double()
    means = torch.stack([points[train_labels == c].mean(0) for c in large])
    into = torch.tensor(large)

    def fold(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        moved = torch.isin(labels, torch.tensor(small))
        out = labels.clone()
        if moved.any():
            out[moved] = into[nearest(as_points(x[moved]).double(), means)]
        return out

    warnings.warn(
        f"{len(small)} cluster(s) of fewer than {smallest} training examples (too few to train as a part) "
        f"joined the nearest part: {int(counts[small].sum())} example(s); a part needs a batch of two (x model.pack)",
        stacklevel=3,
    )
    return fold(train, train_labels), fold(test, test_labels)


def prepare_parts(params: Params, layout: Layout, data: PreparedData) -> dict[str, Any]:
    """Split ``data`` into parts, save each as a prepared set, write the partition's description."""
    method = partition_method(params, data)
    record: dict[str, Any] = {}
    if method == "labels":
        assert data.train_labels is not None
        classes = sorted(int(c) for c in torch.unique(data.train_labels))
        train_of = [data.train_labels == c for c in classes]
        test_of = [data.test_labels == c for c in classes] if data.test_labels is not None else None
        names = (data.meta.get("modes") or {}).get("labels") or [str(c) for c in classes]
        descriptions = [f"class {names[c] if c < len(names) else c}" for c in classes]
    elif method == "none":
        # one part: the whole test split is its own held-out data (held-out steering relies on it)
        train_of, test_of = [torch.ones(len(data.train), dtype=torch.bool)], [torch.ones(len(data.test), dtype=torch.bool)]
        descriptions = ["the whole data set"]
    else:
        train_labels, test_labels, descriptions, record = cluster_partition(data, params)
        train_of = [train_labels == i for i in range(len(descriptions))]
        test_of = [test_labels == i for i in range(len(descriptions))]
    parts = []
    for i, mask in enumerate(train_of):
        test_mask = test_of[i] if test_of is not None else torch.zeros(len(data.test), dtype=torch.bool)
        own_test = bool(test_mask.any())
        if not own_test:  # a part no held-out point falls in: score it on the whole test split
            test_mask = torch.ones(len(data.test), dtype=torch.bool)
        train, test, meta = data.train[mask], data.test[test_mask], dict(data.meta)
        affine: dict[str, Any] = {"shift": [], "scale": 1.0}
        if data.kind == "vector":
            train, test, meta, affine = normalise_part(train, test, meta)
        part = PreparedData(
            meta={
                **meta,
                "count": int(mask.sum()),
                "count_test": int(test_mask.sum()),
                "part": {"index": i, "of": len(train_of), "method": method, "description": descriptions[i], **affine},
                "own_test": own_test,
            },
            train=train,
            test=test,
            train_labels=None if data.train_labels is None else data.train_labels[mask],
            test_labels=None if data.test_labels is None else data.test_labels[test_mask],
        )
        save_prepared(layout.part(i).prepared, part)
        parts.append(
            {
                "index": i,
                "count": part.meta["count"],
                "count_test": part.meta["count_test"],
                "description": descriptions[i],
                **affine,
                # the rows outside every cluster: no cluster, and trained longer (mixture.part_steps)
                **({"background": True} if descriptions[i] == FLAT_PART else {}),
            }
        )
    settings = {
        "partition": params.mixture.partition,
        "parts": params.mixture.parts,
        "max_parts": params.mixture.max_parts,
        "pack": params.model.pack,
    }
    info = {"method": method, "settings": settings, **record, "parts": parts}
    write_json(layout.prepared / MIXTURE_FILE, info)
    if record.get("selection"):
        from gancore.pictures import plot_selection

        plot_selection(record["selection"], layout.prepared / SELECTION_PICTURE, data.meta.get("name", ""))
    return info


def copy_classifier(layout: Layout, index: int) -> None:
    """The part's monitor scores with the whole data set's domain classifier."""
    from gancore.io import copy_file

    if layout.classifier.exists():
        copy_file(layout.classifier, layout.part(index).classifier)


def one_cluster(info: dict[str, Any]) -> bool:
    """Whether a partition (``mixture.json``) is data found to be one cluster (or class): its sole
    part is the whole data. An image folder kept whole (partition ``auto``'s choice for images,
    method ``none``) is not: it trains ``mixture.steps``, the quick first run it was chosen for."""
    return len(info["parts"]) == 1 and info.get("method") != "none"


def _at_least_train_steps(part: dict[str, Any] | None, whole: bool) -> bool:
    """The parts that train no fewer than ``train.steps`` (:func:`part_steps`)."""
    return whole or bool(part and part.get("background"))


def part_steps_setting(params: Params, part: dict[str, Any] | None = None, whole: bool = False) -> str:
    """The setting that decides :func:`part_steps`, for messages: ``mixture.steps``, or
    ``train.steps`` where it is null or the larger of the two counts."""
    if params.mixture.steps is None or (_at_least_train_steps(part, whole) and params.train.steps >= params.mixture.steps):
        return "train.steps"
    return "mixture.steps"


def part_steps(params: Params, part: dict[str, Any] | None = None, whole: bool = False) -> int:
    """The steps a part trains: ``mixture.steps`` (null: ``train.steps``); at least ``train.steps``
    for the rows outside every cluster (``part["background"]``) and for the ``whole`` data found to
    be one cluster (:func:`one_cluster`). A cluster's part among several, normalised, is an easy
    unimodal problem; a flat law over the data's box is not (flat 5-D rows came out clumped from
    1,000 steps), and the sole part is the whole data, which ``mixture.enabled=false`` would train
    ``train.steps`` (a 10-D Gaussian's came out with one of its ten variances at 0.15 after 1,000
    steps, and `gan diagnose` called it intra-mode collapse; CHANGELOG.md)."""
    steps = params.mixture.steps or params.train.steps
    return max(steps, params.train.steps) if _at_least_train_steps(part, whole) else steps
