"""A mixture of GANs, one per part of the data: the design notes' first remedy for mode collapse.

``mixture.enabled: true`` turns the pipeline into a mixture, through the same stages:

* **prepare** partitions the training data into parts: by class label where the data set has
  labels (``mixture.partition: auto`` or ``labels``), else by k-means with ``mixture.parts`` parts
  (the best of several seeded k-means++ restarts). Each part becomes a prepared data set of its
  own under ``data/prepared/parts/partNN/`` (its test split: the held-out points nearest its
  centroid, or of its class), beside ``data/prepared/mixture.json``;
* **train** trains one GAN per part, each exactly as a single GAN trains, into
  ``models/parts/partNN/`` (the ``gan-mixture`` flow trains the parts in parallel), then writes
  ``models/mixture.json``: each part's generator and its weight, its share of the training data.
  The mixture's ``metrics/train_log.csv`` holds the parts' curves averaged step by step;
* **sample** draws from every part in proportion to its weight into one ``samples/samples.pt``,
  so **evaluate** and **diagnose** score the mixture as one model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gancore import trainlog
from gancore.config import Params, ParamsError
from gancore.data.prepared import PreparedData, save_prepared
from gancore.errors import DataError, GanCoreError
from gancore.io import read_json, write_json
from gancore.layout import MIXTURE_FILE, Layout

KMEANS_RESTARTS = 5


def partition_method(params: Params, data: PreparedData) -> str:
    method = params.mixture.partition
    if method == "auto":
        return "labels" if data.kind == "image" and data.train_labels is not None else "kmeans"
    if method == "labels" and data.train_labels is None:
        raise ParamsError([("mixture.partition", f"labels: {data.meta.get('name')} has no class labels; use kmeans (or auto)")])
    return method


def _points(data: PreparedData, split: str) -> torch.Tensor:
    x = data.train if split == "train" else data.test
    return x.float().reshape(len(x), -1)


def kmeans_partition(data: PreparedData, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids [k, d], train assignments [N]) of the best of :data:`KMEANS_RESTARTS` k-means runs
    (lowest within-part sum of squares)."""
    from gancore.diagnostics.ndb import kmeans

    x = _points(data, "train")
    if len(x) < k:
        raise ParamsError([("mixture.parts", f"{k} parts for {len(x)} training examples; use at most {len(x)}")])
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for restart in range(KMEANS_RESTARTS):
        centers, labels = kmeans(x, k, seed, stream=f"mixture/kmeans{restart}")
        inertia = float((x.to(centers.dtype) - centers[labels]).pow(2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centers, labels)
    assert best is not None
    return best[1], best[2]


def prepare_parts(params: Params, layout: Layout, data: PreparedData) -> dict[str, Any]:
    """Split ``data`` into parts, save each as a prepared set, write the partition's description."""
    method = partition_method(params, data)
    if method == "labels":
        assert data.train_labels is not None
        classes = sorted(int(c) for c in torch.unique(data.train_labels))
        train_of = [data.train_labels == c for c in classes]
        test_of = [data.test_labels == c for c in classes] if data.test_labels is not None else None
        names = (data.meta.get("modes") or {}).get("labels") or [str(c) for c in classes]
        descriptions = [f"class {names[c] if c < len(names) else c}" for c in classes]
    else:
        from gancore.diagnostics.ndb import _nearest

        centers, labels = kmeans_partition(data, params.mixture.parts, params.seed)
        test_labels = _nearest(_points(data, "test").to(centers.dtype), centers)
        train_of = [labels == i for i in range(len(centers))]
        test_of = [test_labels == i for i in range(len(centers))]
        descriptions = [f"k-means part around {[round(v, 4) for v in c.tolist()[:4]]}" + ("..." if c.numel() > 4 else "") for c in centers]
    parts = []
    for i, mask in enumerate(train_of):
        test_mask = test_of[i] if test_of is not None else torch.zeros(len(data.test), dtype=torch.bool)
        if not test_mask.any():  # a part no held-out point falls in: score it on the whole test split
            test_mask = torch.ones(len(data.test), dtype=torch.bool)
        train, test, meta = data.train[mask], data.test[test_mask], dict(data.meta)
        shift, scale = [0.0] * (train.shape[1] if data.kind == "vector" else 0), 1.0
        if data.kind == "vector":
            # Each part trains on its own points centred and scaled to unit spread: a GAN learns a
            # blob at the origin fast and precisely, wherever the part lies (grid25 reaches +-4 at
            # sigma 0.05). Sampling maps the part back (x * scale + shift).
            shift_t = train.double().mean(0)
            scale = float(train.double().sub(shift_t).square().mean().sqrt()) or 1.0
            shift = shift_t.tolist()
            train, test = _affine(train, shift_t, scale), _affine(test, shift_t, scale)
            meta = _normalised_meta(meta, shift_t, scale)
        part = PreparedData(
            meta={
                **meta,
                "count": int(mask.sum()),
                "count_test": int(test_mask.sum()),
                "part": {"index": i, "of": len(train_of), "method": method, "description": descriptions[i], "shift": shift, "scale": scale},
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
                "shift": shift,
                "scale": scale,
            }
        )
    info = {"method": method, "parts": parts}
    write_json(layout.prepared / MIXTURE_FILE, info)
    return info


def _affine(x: torch.Tensor, shift: torch.Tensor, scale: float) -> torch.Tensor:
    return ((x.double() - shift) / scale).to(x.dtype)


def _normalised_meta(meta: dict[str, Any], shift: torch.Tensor, scale: float) -> dict[str, Any]:
    """The mode centres, sigma and value range in a part's normalised coordinates."""
    modes = dict(meta.get("modes") or {})
    if modes.get("centers"):
        modes["centers"] = _affine(torch.tensor(modes["centers"], dtype=torch.float64), shift, scale).tolist()
    if modes.get("sigma"):
        modes["sigma"] = float(modes["sigma"]) / scale
    out = {**meta, "modes": modes}
    if meta.get("value_range"):
        lo, hi = meta["value_range"]
        out["value_range"] = [(lo - float(shift.max())) / scale, (hi - float(shift.min())) / scale]
    return out


def copy_classifier(layout: Layout, index: int) -> None:
    """The part's monitor scores with the whole data set's domain classifier."""
    import shutil

    from gancore.io import atomic_path

    source, target = layout.classifier, layout.part(index).classifier
    if source.exists():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def partition_info(layout: Layout) -> dict[str, Any]:
    path = layout.prepared / MIXTURE_FILE
    if not path.exists():
        raise DataError(f"{path} is missing: mixture.enabled needs `gan prepare` run with mixture.enabled=true")
    return read_json(path)


def part_params(params: Params) -> Params:
    """The parameters each part trains with: the mixture's, as a single GAN of ``mixture.steps``."""
    train = params.train.model_copy(update={"steps": params.mixture.steps}) if params.mixture.steps else params.train
    return params.model_copy(update={"mixture": params.mixture.model_copy(update={"enabled": False}), "train": train})


def train_part(params: Params, layout: Layout, index: int, restart: bool = False) -> dict[str, Any]:
    """Train part ``index`` of the mixture (what the ``gan-mixture`` flow runs in parallel)."""
    from gancore.training import train

    info = partition_info(layout)
    part = info["parts"][index]
    if params.train.batch_size > part["count"]:
        raise ParamsError(
            [
                (
                    "train.batch_size",
                    f"{params.train.batch_size} is larger than part {index} of the mixture "
                    f"({part['count']} examples, {part['description']}); lower it or use fewer parts",
                )
            ]
        )
    return train(part_params(params), layout.part(index), restart=restart)


def remove_single(layout: Layout) -> None:
    """A single generator trained here before is replaced by the mixture."""
    import shutil

    for path in (layout.generator, layout.discriminator):
        path.unlink(missing_ok=True)
    shutil.rmtree(layout.best_models, ignore_errors=True)


def finish_mixture(params: Params, layout: Layout) -> dict[str, Any]:
    """Write ``models/mixture.json`` and the averaged training log once every part is trained."""
    info = partition_info(layout)
    total = sum(p["count"] for p in info["parts"])
    parts = []
    for p in info["parts"]:
        generator = layout.part(p["index"]).generator
        if not generator.exists():
            raise GanCoreError(f"{generator} is missing: part {p['index']} of the mixture is not trained yet")
        parts.append({**p, "weight": p["count"] / total, "generator": generator.relative_to(layout.models).as_posix()})
    write_json(layout.mixture, {"method": info["method"], "parts": parts})
    trainlog.write(layout.train_log, mean_log([trainlog.read(layout.part(p["index"]).train_log) for p in info["parts"]]))
    return {"parts": len(parts), "weights": [round(p["weight"], 6) for p in parts], "method": info["method"]}


def mean_log(logs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The parts' logs averaged over the steps they all logged (cells missing in a part skipped)."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for log in logs:
        for row in log:
            by_step.setdefault(int(row["step"]), []).append(row)
    rows = []
    for step in sorted(s for s, group in by_step.items() if len(group) == len(logs)):
        group = by_step[step]
        mean: dict[str, Any] = {"step": step}
        for key in dict.fromkeys(k for row in group for k in row if k != "step"):
            values = [r[key] for r in group if r.get(key) is not None]
            mean[key] = sum(values) / len(values) if values else None
        rows.append(mean)
    return rows


def train_mixture(params: Params, layout: Layout, restart: bool = False) -> dict[str, Any]:
    """The train stage of a mixture: every part in turn (each resumable on its own), then the manifest."""
    info = partition_info(layout)
    remove_single(layout)
    summaries = [train_part(params, layout, p["index"], restart) for p in info["parts"]]
    summary = finish_mixture(params, layout)
    summary["seconds"] = round(sum(s["seconds"] for s in summaries), 3)
    summary["steps"] = part_params(params).train.steps
    return summary


class MixtureGenerator(nn.Module):
    """The parts' generators as one generator ``z -> x`` (what the model registry holds, so a
    mixture serves like any generator).

    Each latent vector picks its part from its first coordinate: ``u = Phi(z_0)`` is uniform on
    [0, 1] and falls into part k's interval of the cumulative weights with probability w_k. The
    part then gets ``z`` with ``z_0`` replaced by ``Phi^-1`` of ``u``'s position inside that
    interval, which is again standard normal: every part sees latent vectors distributed exactly
    as in its training.
    """

    edges: torch.Tensor
    shifts: torch.Tensor | None
    scales: torch.Tensor | None

    def __init__(self, generators: list[nn.Module], weights: list[float], affines: list[tuple[list[float], float]] | None = None):
        super().__init__()
        self.parts = nn.ModuleList(generators)
        # Each part's map back from its normalised coordinates (vector data), x * scale + shift.
        shifts = scales = None
        if affines and affines[0][0]:
            shifts = torch.tensor([a[0] for a in affines], dtype=torch.float32)
            scales = torch.tensor([a[1] for a in affines], dtype=torch.float32)
        self.register_buffer("shifts", shifts)
        self.register_buffer("scales", scales)
        w = torch.tensor(weights, dtype=torch.float64)
        edges = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(w / w.sum(), 0)])
        edges[-1] = 1.0
        self.register_buffer("edges", edges)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = 0.5 * (1.0 + torch.erf(z[:, 0].double() / math.sqrt(2.0)))
        part = torch.bucketize(u, self.edges[1:-1], right=True)
        lo, hi = self.edges[part], self.edges[part + 1]
        inner = ((u - lo) / (hi - lo)).clamp(1e-12, 1 - 1e-12)
        z = z.clone()
        z[:, 0] = (math.sqrt(2.0) * torch.erfinv(2.0 * inner - 1.0)).to(z.dtype)
        outputs: torch.Tensor | None = None
        for k, generator in enumerate(self.parts):
            mask = part == k
            if not bool(mask.any()):
                continue
            x = generator(z[mask])
            if self.shifts is not None and self.scales is not None:
                x = x * self.scales[k] + self.shifts[k]
            if outputs is None:
                outputs = x.new_empty((len(z), *x.shape[1:]))
            outputs[mask] = x
        assert outputs is not None
        return outputs


def load_mixture_generator(layout: Layout, device: str = "cpu") -> tuple[MixtureGenerator, dict[str, Any]]:
    """The mixture in ``layout`` as one module, and a record like a model file's."""
    from gancore.modelio import load_generator, read_model_file

    manifest = read_json(layout.mixture)
    generators, record = [], {}
    for part in manifest["parts"]:
        path = layout.models / part["generator"]
        record = read_model_file(path)
        generators.append(load_generator(path, device))
    affines = [(p.get("shift") or [], float(p.get("scale", 1.0))) for p in manifest["parts"]]
    module = MixtureGenerator(generators, [p["weight"] for p in manifest["parts"]], affines).to(device).eval()
    keep = ("arch", "options", "latent_dim", "shape", "kind", "ema", "step")
    return module, {**{k: record.get(k) for k in keep}, "parts": len(generators)}
