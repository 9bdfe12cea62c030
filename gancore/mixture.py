"""A mixture of GANs, one per part of the data: the design notes' first remedy for mode collapse.

``mixture.enabled: true`` turns the pipeline into a mixture, through the same stages:

* **prepare** partitions the training data into parts (:mod:`gancore.partition`): by class label
  where the data set has labels, else into the data's own clusters, as many as BIC finds
  (``mixture.parts: auto``) or ``mixture.parts``. Each part becomes a prepared data set of its
  own under ``data/prepared/parts/partNN/``, beside ``data/prepared/mixture.json``;
* **train** trains one GAN per part, each exactly as a single GAN trains, into
  ``models/parts/partNN/`` (the ``gan-mixture`` flow trains the parts in parallel), then writes
  ``models/mixture.json``: each part's generator and its weight, its share of the training data.
  The mixture's ``metrics/train_log.csv`` holds the parts' curves averaged step by step;
* **sample** draws from every part in proportion to its weight into one ``samples/samples.pt``,
  so **evaluate** and **diagnose** score the mixture as one model.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gancore import progress, trainlog
from gancore.config import Params, ParamsError
from gancore.data.settings import made_otherwise, shown
from gancore.errors import DataError, GanCoreError
from gancore.io import read_json, write_json
from gancore.layout import MIXTURE_FILE, Layout
from gancore.part_space import back_matrix, to_data
from gancore.partition import method_for, one_cluster, part_steps, part_steps_setting
from gancore.training.monitor import PREFIX


def partition_info(layout: Layout, params: Params | None = None) -> dict[str, Any]:
    """The prepared partition; with ``params``, refused where it was made under other settings
    (``gan train -S mixture.parts=4`` trained prepare's 8 parts, and said they were BIC's)."""
    path = layout.prepared / MIXTURE_FILE
    if not path.exists():
        raise DataError(f"{path} is missing: mixture.enabled needs `gan prepare` run with mixture.enabled=true")
    info = read_json(path)
    if params is not None and (differ := _other_settings(params, info)):
        raise made_otherwise(path, differ)
    return info


def _other_settings(params: Params, info: dict[str, Any]) -> list[str]:
    """The partition settings that would make another partition than ``info``'s (none for a
    partition prepared before they were recorded). Settings with the same effect pass: partition
    auto is kmeans for vectors, max_parts matters to parts: auto alone, and model.pack only where
    it folds a cluster the other does not (clusters below a batch of two packed examples join
    their nearest part: :func:`gancore.partition.cluster_partition`)."""
    saved = info.get("settings")
    if not saved:
        return []
    m = params.mixture
    method = method_for(params, params.data_kind)
    same_count = method != "kmeans" or (saved.get("parts") == m.parts and (m.parts != "auto" or saved.get("max_parts") == m.max_parts))
    now = {"partition": m.partition, "parts": m.parts, "max_parts": m.max_parts}
    # no setting differs where the data do (another kind): training's data check names that
    differ = (
        []
        if method == info.get("method") and same_count
        else [f"mixture.{k}: {shown(saved.get(k))} then, {shown(v)} now" for k, v in now.items() if saved.get(k) != v]
    )
    then, pack = saved.get("pack"), params.model.pack
    if then is not None and then != pack:
        low, high = sorted((2 * then, 2 * pack))
        if folded := [c for c in info.get("sizes") or () if low <= c < high]:
            differ.append(f"model.pack: {then} then, {pack} now, which folds clusters of {', '.join(map(str, folded))} rows otherwise")
    return differ


def part_params(params: Params, count: int | None = None, part: dict[str, Any] | None = None, whole: bool = False) -> Params:
    """The parameters each part trains with: the mixture's, as a single GAN of :func:`part_steps`;
    for a part of ``count`` examples too few to fill ``train.batch_size`` (times ``model.pack``),
    the largest batch it can fill. The rows outside every cluster keep no best generator: no
    sample of theirs is high quality, so the figures ``train.keep_best`` ranks by are 0 or
    undefined there (with mode_kl, none was kept, and ``sample.generator=best`` failed; a review);
    they sample their last (:func:`gancore.sampling.part_generator`)."""
    update: dict[str, Any] = {"steps": part_steps(params, part, whole)}
    if part and part.get("background"):
        update["keep_best"] = None
    if count is not None and params.train.batch_size * params.model.pack > count:
        update["batch_size"] = count // params.model.pack
    train = params.train.model_copy(update=update) if update else params.train
    return params.model_copy(update={"mixture": params.mixture.model_copy(update={"enabled": False}), "train": train})


def check_part_sizes(params: Params, parts: list[dict[str, Any]]) -> None:
    """Refuse (exit 2) parts too small to train: a part must fill a batch of two packed examples
    (batch norm cannot normalise one, and a GAN of one example per step learns nothing); checked
    for every part before any trains, so that a refusal does not come after hours of the others."""
    pack = params.model.pack
    small = [p for p in parts if p["count"] < 2 * pack]
    if small:
        listed = ", ".join(f"part {p['index']} ({p['description']}: {p['count']})" for p in small)
        raise ParamsError(
            [
                (
                    "mixture.parts",
                    f"{listed} {'has' if len(small) == 1 else 'have'} fewer examples than a batch of 2 x model.pack={pack} needs; "
                    "use fewer parts (mixture.parts), a smaller model.pack, or mixture.enabled=false",
                )
            ]
        )


def train_part(
    params: Params,
    layout: Layout,
    index: int,
    restart: bool = False,
    later_steps: int | None = None,
    inputs_read: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train part ``index`` of the mixture (what the ``gan-mixture`` flow runs in parallel).

    ``later_steps``: the steps of the parts still to train after this one, so that the time
    estimate printed early in training covers the rest of the mixture (sequential training)."""
    from gancore.training import train

    info = partition_info(layout, params)
    part = info["parts"][index]
    check_part_sizes(params, [part])
    own, setting = _part_run(params, info, index)
    if own.train.batch_size != params.train.batch_size:
        progress.say(
            f"part {index + 1}/{len(info['parts'])} ({part['description']}) has {part['count']} examples, fewer than "
            f"train.batch_size={params.train.batch_size}"
            + (f" x model.pack={params.model.pack}" if params.model.pack > 1 else "")
            + f": it trains with batch {own.train.batch_size}"
        )
    label = f"train part {index + 1}/{len(info['parts'])}"
    return train(
        own, layout.part(index), restart=restart, label=label, later_steps=later_steps, steps_setting=setting, inputs_read=inputs_read
    )


def check_parts(params: Params, layout: Layout, restart: bool = False) -> None:
    """Refuse, before any part trains, parts too small to train and a part's checkpoint that its
    run cannot continue (:func:`gancore.training.check_resume`)."""
    from gancore.training import check_resume

    info = partition_info(layout, params)
    check_part_sizes(params, info["parts"])
    for p in info["parts"]:
        own, setting = _part_run(params, info, p["index"])
        check_resume(own, layout.part(p["index"]), restart, setting)


def _part_run(params: Params, info: dict[str, Any], index: int) -> tuple[Params, str]:
    """Part ``index``'s parameters and the setting that decides its steps."""
    part = info["parts"][index]
    return part_params(params, part["count"], part, one_cluster(info)), part_steps_setting(params, part, one_cluster(info))


def plan_text(params: Params, layout: Layout) -> str:
    """What the train stage is about to do, in one line."""
    from gancore.device import resolve_device

    device = resolve_device(params.device)
    batch = f"batch {params.train.batch_size}" + (f" x pack {params.model.pack}" if params.model.pack > 1 else "")
    if params.mixture.enabled and layout.prepared.joinpath(MIXTURE_FILE).is_file():
        info = partition_info(layout, params)
        how = {"labels": "one per class", "none": "the whole data set: images are not split under partition auto"}.get(
            info["method"], "clusters, count chosen by BIC" if info.get("chosen_by") == "bic" else "clusters"
        )
        n, whole = len(info["parts"]), one_cluster(info)
        steps = part_steps(params, whole=whole)
        flat = [p for p in info["parts"] if p.get("background")]
        longer = (
            f", {flat[0]['description']} x {part_steps(params, flat[0], whole)}"
            if flat and part_steps(params, flat[0], whole) != steps
            else ""
        )
        return f"plan: {'a mixture of ' + str(n) + ' GANs' if n > 1 else 'one GAN'} ({how}) x {steps} steps{' each' if n > 1 else ''}{longer}, {batch}, {params.model.arch} on {device}"
    return f"plan: one GAN, {params.train.steps} steps, {batch}, {params.model.arch} on {device}"


def remove_single(layout: Layout) -> None:
    """A single generator trained here before is replaced by the mixture."""
    import shutil

    for path in (layout.generator, layout.discriminator):
        path.unlink(missing_ok=True)
    shutil.rmtree(layout.best_models, ignore_errors=True)


def finish_mixture(params: Params, layout: Layout, part_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``models/mixture.json`` and the averaged training log once every part is trained; the
    train stage's summary, from the parts' (``part_summaries``)."""
    info = partition_info(layout)
    total = sum(p["count"] for p in info["parts"])
    parts = []
    for p in info["parts"]:
        generator = layout.part(p["index"]).generator
        if not generator.exists():
            raise GanCoreError(f"{generator} is missing: part {p['index']} of the mixture is not trained yet")
        parts.append({**p, "weight": p["count"] / total, "generator": generator.relative_to(layout.models).as_posix()})
    write_json(layout.mixture, {"method": info["method"], "parts": parts})
    # Only now that the mixture exists: a refused or interrupted mixture leaves the single GAN.
    remove_single(layout)
    judged = mixture_monitor(params, layout, parts)
    rows = mean_log([trainlog.read(layout.part(p["index"]).train_log) for p in info["parts"]])
    # The parts' monitor figures describe one part each (1 mode covered of the data's 8): the
    # mixture's log carries the mixture's own, judged on its parts' samples together.
    rows = [{k: v for k, v in row.items() if not k.startswith(PREFIX)} for row in rows]
    for row in rows:
        row.update(judged.get(int(row["step"]), {}))
    trainlog.write(layout.train_log, rows)
    summary: dict[str, Any] = {"parts": len(parts), "weights": [round(p["weight"], 6) for p in parts], "method": info["method"]}
    summary["seconds"] = round(sum(s["seconds"] for s in part_summaries), 3)
    summary["steps"] = max(part_steps(params, p, one_cluster(info)) for p in info["parts"])
    # where the parts trained and on what install (the run's train.device / train.software tags)
    for key in ("device", "software"):
        values = sorted({str(s[key]) for s in part_summaries if s.get(key) is not None})
        if values:
            summary[key] = ", ".join(values)
    return summary


def mixture_monitor(params: Params, layout: Layout, parts: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The collapse monitor's figures of the mixture itself at every step a part was checked, once
    every part has been: each part's fixed-z samples of its last check at or before that step
    (a part that finished sooner stands as its last check), mapped back to the data's coordinates
    and taken in proportion to the parts' weights, judged against the whole data set (and pictured
    in ``plots/progress/``, the mixture's own progress series)."""
    import torch

    from gancore.data.prepared import load_prepared, to_model_range
    from gancore.io import torch_load
    from gancore.sampling import allocate
    from gancore.training.monitor import CollapseMonitor, log_columns

    if params.train.monitor_every is None or not parts:
        return {}
    checked = [sorted(int(f.stem[5:]) for f in layout.part(p["index"]).progress.glob("step_*.pt")) for p in parts]
    steps = as_of(checked)
    if not steps:
        return {}
    data = load_prepared(layout.prepared)
    d = params.diagnose
    monitor = CollapseMonitor(
        data,
        layout.prepared,
        params.model.latent_dim,
        params.seed,
        torch.device("cpu"),
        d.confidence,
        d.duplicate_fraction,
        ndb_bins=d.ndb_bins,
    )
    counts = allocate(len(monitor.z), [p["weight"] for p in parts])
    layout.progress.mkdir(parents=True, exist_ok=True)
    judged = {}
    for step, at in steps:
        xs = []
        for part, count, own, i in zip(parts, counts, checked, at):
            x = to_model_range(torch_load(layout.part(part["index"]).progress / f"step_{own[i]:06d}.pt")["x"])[:count]
            if part.get("shift"):
                x = to_data(x, part)
            xs.append(x)
        x = torch.cat(xs)
        figures = monitor.score(x)
        monitor.picture(x, layout.progress / f"step_{step:06d}.png")
        judged[step] = log_columns(figures, monitor.judge(figures))
    return judged


def as_of(steps: list[list[int]]) -> list[tuple[int, list[int]]]:
    """Every step in one of the parts' sorted ``steps`` once each part has one at or before it, with
    the index of each part's last step at or before it: a part that finished sooner (the rows
    outside every cluster train longer) stands as it ended."""
    out = []
    for step in sorted(set().union(*steps)):
        at = [bisect.bisect_right(own, step) - 1 for own in steps]
        if min(at, default=-1) >= 0:
            out.append((step, at))
    return out


def mean_log(logs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The parts' logs averaged at every step one of them logged, each part by its row at that step
    or its last before it (:func:`as_of`); cells missing in a part are skipped."""
    ordered = [sorted(log, key=lambda row: int(row["step"])) for log in logs]
    rows = []
    for step, at in as_of([[int(row["step"]) for row in log] for log in ordered]):
        group = [log[i] for log, i in zip(ordered, at)]
        mean: dict[str, Any] = {"step": step}
        for key in dict.fromkeys(k for row in group for k in row if k != "step"):
            values = [r[key] for r in group if r.get(key) is not None]
            mean[key] = sum(values) / len(values) if values else None
        rows.append(mean)
    return rows


def train_mixture(params: Params, layout: Layout, restart: bool = False, inputs_read: Callable[[], None] | None = None) -> dict[str, Any]:
    """The train stage of a mixture: every part in turn (each resumable on its own), then the
    manifest. ``inputs_read`` is called once the first part has passed training's checks; every
    part's checkpoint is checked before the first trains (a later part's refusal failed the run
    after the earlier parts had trained)."""
    info = partition_info(layout, params)
    check_parts(params, layout, restart)
    steps = [part_steps(params, p, one_cluster(info)) for p in info["parts"]]
    summaries = [
        train_part(params, layout, p["index"], restart, later_steps=sum(steps[i + 1 :]), inputs_read=inputs_read if i == 0 else None)
        for i, p in enumerate(info["parts"])
    ]
    return finish_mixture(params, layout, summaries)


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
    matrices: torch.Tensor | None

    def __init__(self, generators: list[nn.Module], weights: list[float], affines: list[tuple[list[float], torch.Tensor]] | None = None):
        super().__init__()
        self.parts = nn.ModuleList(generators)
        # Each part's map back from its normalised coordinates (vector data), x @ matrix^T + shift
        # (the matrix: a scale times the identity, or a fitted cluster's principal axes).
        shifts = matrices = None
        if affines and affines[0][0]:
            shifts = torch.tensor([a[0] for a in affines], dtype=torch.float32)
            matrices = torch.stack([a[1] for a in affines]).float()
        self.register_buffer("shifts", shifts)
        self.register_buffer("matrices", matrices)
        w = torch.tensor(weights, dtype=torch.float64)
        edges = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(w / w.sum(), 0)])
        edges[-1] = 1.0
        self.register_buffer("edges", edges)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A mixture pickled before parts had matrices (MLflow's registry holds it so) had one
        scale per part: the same map as that scale times the identity."""
        super().__setstate__(state)
        buffers = self.__dict__.get("_buffers", {})
        if "matrices" not in buffers:
            scales, shifts = buffers.pop("scales", None), buffers.get("shifts")
            matrices = None
            if scales is not None and shifts is not None:
                matrices = scales[:, None, None] * torch.eye(shifts.shape[1], dtype=scales.dtype, device=scales.device)
            self.register_buffer("matrices", matrices)

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
            if self.shifts is not None and self.matrices is not None:
                x = x @ self.matrices[k].T + self.shifts[k]
            if outputs is None:
                outputs = x.new_empty((len(z), *x.shape[1:]))
            outputs[mask] = x
        assert outputs is not None
        return outputs


def load_mixture_generator(layout: Layout, device: str = "cpu", files: list[Path] | None = None) -> tuple[MixtureGenerator, dict[str, Any]]:
    """The mixture in ``layout`` as one module, and a record like a model file's; ``files``: the
    parts' generator files in the manifest's order (default: their last ones; what ``gan sample``
    draws from is :func:`gancore.sampling.sampled_generators`)."""
    from gancore.modelio import load_generator, read_model_file

    manifest = read_json(layout.mixture)
    generators, record = [], {}
    for i, part in enumerate(manifest["parts"]):
        path = files[i] if files is not None else layout.models / part["generator"]
        record = read_model_file(path)
        generators.append(load_generator(path, device))
    affines = [(p.get("shift") or [], back_matrix(p, len(p.get("shift") or []))) for p in manifest["parts"]]
    module = MixtureGenerator(generators, [p["weight"] for p in manifest["parts"]], affines).to(device).eval()
    keep = ("arch", "options", "latent_dim", "shape", "kind", "ema", "step")
    return module, {**{k: record.get(k) for k in keep}, "parts": len(generators)}
