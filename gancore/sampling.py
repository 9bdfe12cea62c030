"""The sampling stage: a fixed set of samples from the trained generator, and a picture of them.

The latent vectors come from the CPU stream ``"sample"`` of ``params.seed`` (:mod:`gancore.seeds`):
independent of training's streams, and the same vectors whatever device runs the generator. A
mixture of GANs (``models/mixture.json``) is sampled part by part, in proportion to the parts'
shares of the training data, each part from its own stream, then shuffled into one set.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gancore import seeds
from gancore.config import Params
from gancore.data.prepared import load_meta, load_prepared, to_model_range, to_uint8
from gancore.device import resolve_device
from gancore.errors import GanCoreError
from gancore.io import file_digest, read_json, save_figure, torch_load, torch_save
from gancore.layout import Layout
from gancore.modelio import module_from_record, read_model_file
from gancore.part_space import to_data
from gancore.pictures import save_image_grid

SAMPLE_STREAM = "sample"
# Generated pixel values outside the model range [-1, 1] beyond this share are said (they are
# clipped when stored as 8-bit images, so what is scored is not what the generator drew).
OUTSIDE_RANGE_WARN = 0.01
POINTS_CSV = "samples.csv"


@torch.no_grad()
def draw(
    generator: nn.Module, n: int, latent_dim: int, rng: torch.Generator, batch_size: int, device: torch.device | str = "cpu"
) -> Tensor:
    """``n`` samples (float, model range, on the CPU) from latent vectors drawn from ``rng`` (CPU)."""
    out = []
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), latent_dim, generator=rng)
        out.append(generator(z.to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def allocate(n: int, weights: list[float]) -> list[int]:
    """``n`` split in proportion to ``weights`` (largest remainders: the counts sum to ``n``)."""
    total = sum(weights)
    exact = [n * w / total for w in weights]
    counts = [int(e) for e in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    return counts


def part_counts(n: int, weights: list[float], rng: torch.Generator) -> list[int]:
    """How many of ``n`` samples each part draws when every sample picks its part with probability
    its weight, as the mixture's latent vector does (:class:`gancore.mixture.MixtureGenerator`):
    multinomial counts. The expected counts instead (:func:`allocate`) made the sample set no
    random draw of the model: every mode got its exact share, and the mode KL sat below what any
    faithful random sampler reaches (ring8: 0.00 where it averages (K - 1) / 2N = 0.0014)."""
    w = torch.tensor(weights, dtype=torch.float64)
    picks = torch.multinomial(w / w.sum(), n, replacement=True, generator=rng) if n else torch.empty(0, dtype=torch.long)
    return torch.bincount(picks, minlength=len(weights)).tolist()


def _load(path: Path, params: Params, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    record = read_model_file(path)
    if tuple(record["shape"]) != params.data_shape:
        raise GanCoreError(
            f"{path} makes samples of shape {record['shape']}, but the parameters describe "
            f"{params.data.name} with shape {list(params.data_shape)}: run `gan train` with these parameters"
        )
    return module_from_record(record, "generator", device, path), record


def generator_path(params: Params, layout: Layout) -> Path:
    """The generator file ``gan sample`` draws from in ``layout`` (a run's, or a mixture part's):
    the last one, or with ``sample.generator=best`` the one ``train.keep_best`` kept."""
    if params.sample.generator == "best":
        path = layout.best_models / layout.generator.name
        if not path.exists():
            raise GanCoreError(
                f"{path} is missing: sample.generator=best needs a training run with train.keep_best set, and keep_best keeps "
                "a generator only at a monitor check not judged collapsed (monitor/collapse in the training log); use "
                "sample.generator=last"
            )
        if layout.generator.exists() and read_model_file(path).get("params_digest") != read_model_file(layout.generator).get(
            "params_digest"
        ):
            raise GanCoreError(
                f"{path} was kept by another training run than {layout.generator} (other parameters, or before a "
                "--restart); train again with train.keep_best set, or sample the last generator (sample.generator=last)"
            )
        return path
    return layout.generator


def part_generator(params: Params, layout: Layout, part: dict[str, Any]) -> Path:
    """The generator file a mixture's part samples (:func:`generator_path` in its layout); the rows
    outside every cluster keep no best and sample their last (:func:`gancore.mixture.part_params`)."""
    own = layout.part(int(part["index"]))
    return own.generator if part.get("background") else generator_path(params, own)


def sampled_generators(params: Params, layout: Layout) -> list[Path]:
    """Every generator file the samples come from: the mixture's parts', or the single one."""
    if layout.mixture.exists():
        return [part_generator(params, layout, p) for p in read_json(layout.mixture)["parts"]]
    return [generator_path(params, layout)]


def sampled_step(params: Params, layout: Layout) -> int | None:
    """The training step of the generator(s) sampled (the latest of a mixture's parts), or None
    when there is none yet."""
    try:
        steps = [read_model_file(path).get("step") for path in sampled_generators(params, layout)]
    except GanCoreError:
        return None
    known = [int(s) for s in steps if s is not None]
    return max(known) if known else None


def draw_samples(params: Params, layout: Layout, device: torch.device) -> tuple[Tensor, dict[str, Any]]:
    """The samples of the trained model (a single generator or a mixture) and its record."""
    n, bs = params.n_samples, params.sample.batch_size
    if layout.mixture.exists():
        manifest = read_json(layout.mixture)
        counts = part_counts(n, [p["weight"] for p in manifest["parts"]], seeds.generator(params.seed, f"{SAMPLE_STREAM}/parts"))
        parts, record = [], None
        for part, count in zip(manifest["parts"], counts):
            generator, record = _load(part_generator(params, layout, part), params, device)
            if count == 0:  # no sample picked this part
                continue
            stream = seeds.generator(params.seed, f"{SAMPLE_STREAM}/part{part['index']}")
            x = draw(generator, count, record["latent_dim"], stream, bs, device)
            if part.get("shift"):  # back from the part's normalised coordinates
                x = to_data(x, part)
            parts.append(x)
        x = torch.cat(parts)
        x = x[torch.randperm(len(x), generator=seeds.generator(params.seed, f"{SAMPLE_STREAM}/shuffle"))]
        assert record is not None
        return x, {**record, "mixture_counts": counts}
    generator, record = _load(generator_path(params, layout), params, device)
    return draw(generator, n, record["latent_dim"], seeds.generator(params.seed, SAMPLE_STREAM), bs, device), record


def sample(params: Params, layout: Layout) -> dict[str, Any]:
    started = time.perf_counter()
    device = resolve_device(params.device)
    x, record = draw_samples(params, layout, device)
    bad = int((~torch.isfinite(x)).any(dim=tuple(range(1, x.dim()))).sum()) if len(x) else 0
    if bad:
        # to_uint8 would store NaN as black and inf as white: valid-looking pixels a diverged
        # generator never drew (found by a review).
        raise GanCoreError(
            f"{bad} of {len(x)} samples hold NaN or infinite values: the generator diverged; train again "
            "(a lower learning rate, loss.name=wasserstein_gp, or train.keep_best with sample.generator=best)"
        )
    outside = float(((x < -1) | (x > 1)).double().mean()) if record["kind"] == "image" and len(x) else 0.0
    if outside > OUTSIDE_RANGE_WARN:
        warnings.warn(
            f"{outside:.1%} of the generated pixel values lie outside [-1, 1], the model range; they are clipped when stored "
            "(an architecture whose generator ends without tanh?)",
            stacklevel=2,
        )
    stored = to_uint8(x) if record["kind"] == "image" else x
    torch_save(
        {
            "x": stored,
            "stream": SAMPLE_STREAM,
            "seed": params.seed,
            "latent_dim": int(record["latent_dim"]),
            "drawn_from": drawn_from(params, layout),
        },
        layout.samples_file,
    )

    picture = layout.samples_picture
    if record["kind"] == "image":
        save_image_grid(stored[: params.sample.grid_size], picture)
    else:
        units = load_meta(layout.prepared).get("units")
        if units:
            write_points_csv(to_units(x, units), units["columns"], layout.samples / POINTS_CSV)
        save_scatter(x, layout, picture)
    summary = {
        "n": int(x.shape[0]),
        "shape": list(x.shape[1:]),
        "seconds": round(time.perf_counter() - started, 3),
        "picture": str(picture),
    }
    if "mixture_counts" in record:
        summary["mixture_counts"] = record["mixture_counts"]
    return summary


def _named_generators(params: Params, layout: Layout) -> dict[str, Path]:
    """:func:`sampled_generators` by their paths relative to the run (what ``samples.pt`` records)."""
    return {path.relative_to(layout.root).as_posix(): path for path in sampled_generators(params, layout)}


def drawn_from(params: Params, layout: Layout) -> dict[str, str]:
    """Each generator file the samples come from (relative to the run) and the sha256 of its bytes."""
    return {name: file_digest(path) for name, path in _named_generators(params, layout).items()}


def load_samples(layout: Layout) -> Tensor:
    """The samples as float in model range ([-1, 1] for images), on the CPU."""
    path = layout.samples_file
    if not path.exists():
        raise GanCoreError(f"{path} is missing: run `gan sample` first")
    return to_model_range(torch_load(path, GanCoreError, "run `gan sample` again")["x"])


def check_trained(params: Params, layout: Layout) -> None:
    """Refuse a stage after training whose parameters ask for another kind of model than
    ``models/`` holds: a mixture of GANs under ``mixture.enabled=false``, or one GAN under true.
    ``gan sample`` drew from whichever was there, and evaluate and diagnose recorded its figures
    under settings it was not trained with. Nothing to check where nothing was trained here."""
    mixture, single = layout.mixture.exists(), layout.generator.exists()
    if mixture and not params.mixture.enabled:
        held, asked = f"a mixture of GANs ({layout.mixture})", "one GAN (mixture.enabled=false)"
        train = "`gan train -S mixture.enabled=false`"
    elif single and not mixture and params.mixture.enabled:
        held, asked = f"one GAN ({layout.generator})", "a mixture of GANs (mixture.enabled=true)"
        train = "`gan prepare` (which partitions the data) and `gan train`, with mixture.enabled=true"
    else:
        return
    raise GanCoreError(
        f"{layout.models} holds {held}, and these parameters ask for {asked}: run this stage with the setting it was "
        f"trained with, or train what you ask for ({train})"
    )


def check_sampleable(params: Params, layout: Layout) -> None:
    """Refuse ``gan sample`` where a generator it would draw from is missing (before a run opens)."""
    if params.mixture.enabled and not layout.mixture.exists():
        raise GanCoreError(f"{layout.mixture} is missing: run `gan train` first")
    for path in sampled_generators(params, layout):
        if not path.exists():
            raise GanCoreError(f"{path} is missing: run `gan train` first")


def check_samples(params: Params, layout: Layout) -> None:
    """Refuse ``layout``'s samples where they are missing or are not what ``gan sample`` draws
    under ``params`` (:func:`stale_samples`)."""
    path = layout.samples_file
    if not path.exists():
        raise GanCoreError(f"{path} is missing: run `gan sample` first")
    differ = stale_samples(params, layout, torch_load(path, GanCoreError, "run `gan sample` again"))
    if differ:
        raise GanCoreError(f"{path} holds other samples than these parameters draw: {'; '.join(differ)}. Run `gan sample`")


def stale_samples(params: Params, layout: Layout, saved: dict[str, Any]) -> list[str]:
    """Why ``saved`` (a samples file's contents) are not what ``gan sample`` draws now: a generator
    trained further or again since (evaluate and diagnose scored the old one's samples and
    recorded the new run's parameters), another ``sample.generator``, another ``sample.n``. None
    for samples drawn before the record. Generators that are not here (a checkout of the samples
    alone) are not compared, nor a kept generator ``sample.generator=best`` finds missing
    (``gan sample`` names that)."""
    then = saved.get("drawn_from")
    if then is None:
        return []
    differ = []
    if len(saved["x"]) != params.n_samples:
        differ.append(f"{len(saved['x'])} were drawn, sample.n asks for {params.n_samples}")
    if not any((layout.root / name).exists() for name in then):
        return differ
    try:
        names = _named_generators(params, layout)
    except GanCoreError:
        return differ
    if set(names) != set(then):
        differ.append(
            f"they were drawn from {_listed(then)}, these parameters draw from {_listed(names)} (sample.generator, or another mixture)"
        )
    elif changed := [name for name, path in names.items() if path.exists() and file_digest(path) != then[name]]:
        differ.append(f"{_listed(changed)} changed since they were drawn: trained further, or again")
    return differ


def _listed(names: Any, most: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def to_units(x: Tensor, units: dict[str, Any]) -> Tensor:
    """Points from the prepared (standardised) space back to the data file's units."""
    return x.double() * torch.tensor(units["std"], dtype=torch.float64) + torch.tensor(units["mean"], dtype=torch.float64)


def write_points_csv(x: Tensor, columns: list[str], path: Path) -> None:
    """Points [N, d] as a .csv with a header row (full float64 precision), written atomically."""
    import csv
    import io

    from gancore.io import write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([repr(v) for v in row] for row in x.tolist())
    write_text(path, buffer.getvalue())


def save_scatter(points: Tensor, layout: Layout, path: str | Path, max_real: int = 5000) -> None:
    """Samples over held-out real points and the mode centres, on equal axes (the first two
    coordinates, in the data file's units for points)."""
    from matplotlib.figure import Figure

    from gancore.pictures import plane

    meta = load_meta(layout.prepared)
    real = load_prepared(layout.prepared).test[:max_real]
    modes = meta.get("modes") or {}
    centers = torch.tensor(modes.get("centers") or modes.get("means") or [], dtype=torch.float64)
    units = meta.get("units")
    if units:
        points, real = to_units(points, units), to_units(real, units)
        centers = to_units(centers, units) if len(centers) else centers
    points, real = torch.from_numpy(plane(points)), torch.from_numpy(plane(real))
    marks = torch.from_numpy(plane(centers)) if len(centers) else None
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    if units:
        names = list(units["columns"]) + [""]
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1] if len(units["columns"]) > 1 else "")
    # Generated first, real on top: the real modes are tight (sigma 0.01-0.05) and would vanish
    # under thousands of generated points.
    ax.scatter(points[:, 0], points[:, 1], s=4, c="tab:blue", alpha=0.5, linewidths=0, label=f"generated ({len(points)})", rasterized=True)
    ax.scatter(real[:, 0], real[:, 1], s=2, c="black", linewidths=0, label=f"real, held out ({len(real)})", rasterized=True)
    if marks is not None:
        c = marks
        if modes.get("estimated"):
            what = f"fitted components ({len(c)}; {modes.get('count', len(c))} clusters)"
        else:
            what = f"mode centres ({len(c)})"
        ax.scatter(c[:, 0], c[:, 1], marker="x", s=40, c="tab:red", label=what)
    if not units:  # the protocols' coordinates share one scale; a file's columns need not
        ax.set_aspect("equal")
    ax.set_title(f"{meta.get('name', 'data')}: samples")
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
