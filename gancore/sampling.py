"""The sampling stage: a fixed set of samples from the trained generator, and a picture of them.

The latent vectors come from a CPU ``torch.Generator`` seeded by ``params.seed + SAMPLE_SEED_OFFSET``:
independent of training's streams, and the same vectors whatever device runs the generator.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gancore.config import Params
from gancore.data.prepared import load_meta, load_prepared, to_model_range, to_uint8
from gancore.device import resolve_device
from gancore.errors import GanCoreError
from gancore.io import atomic_path, save_figure, torch_save
from gancore.layout import Layout
from gancore.modelio import GENERATOR_FILE, module_from_record, read_model_file

SAMPLE_SEED_OFFSET = 1_000_003
SAMPLES_FILE = "samples.pt"
PICTURE_FILE = "samples.png"


@torch.no_grad()
def draw(generator: nn.Module, n: int, latent_dim: int, seed: int, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
    """``n`` samples (float, model range, on the CPU) from latent vectors seeded by ``seed``."""
    rng = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), latent_dim, generator=rng)
        out.append(generator(z.to(device)).float().cpu())
    return torch.cat(out)


def sample(params: Params, layout: Layout) -> dict[str, Any]:
    started = time.perf_counter()
    device = resolve_device(params.device)
    model_path = layout.models / GENERATOR_FILE
    record = read_model_file(model_path)
    if tuple(record["shape"]) != params.data_shape:
        raise GanCoreError(
            f"{model_path} makes samples of shape {record['shape']}, but the parameters describe "
            f"{params.data.name} with shape {list(params.data_shape)}: run `gan train` with these parameters"
        )
    generator = module_from_record(record, "generator", device, model_path)
    seed = params.seed + SAMPLE_SEED_OFFSET
    x = draw(generator, params.n_samples, record["latent_dim"], seed, params.sample.batch_size, device)
    stored = to_uint8(x) if record["kind"] == "image" else x
    torch_save({"x": stored, "seed": seed, "latent_dim": int(record["latent_dim"])}, layout.samples / SAMPLES_FILE)

    picture = layout.samples / PICTURE_FILE
    if record["kind"] == "image":
        save_image_grid(stored[: params.sample.grid_size], picture)
    else:
        save_scatter(x, layout, picture)
    return {
        "n": int(x.shape[0]),
        "shape": list(x.shape[1:]),
        "seconds": round(time.perf_counter() - started, 3),
        "picture": str(picture),
    }


def load_samples(layout: Layout) -> Tensor:
    """The samples as float in model range ([-1, 1] for images), on the CPU."""
    path = layout.samples / SAMPLES_FILE
    if not path.exists():
        raise GanCoreError(f"{path} is missing: run `gan sample` first")
    return to_model_range(torch.load(path, map_location="cpu", weights_only=True)["x"])


def save_image_grid(images: Tensor, path: str | Path) -> None:
    """uint8 images [N, C, H, W] as one roughly square grid."""
    from torchvision.utils import make_grid, save_image

    grid = make_grid(images.float() / 255.0, nrow=math.ceil(math.sqrt(len(images))), padding=2)
    with atomic_path(path) as tmp:
        save_image(grid, tmp, format="png")


def save_scatter(points: Tensor, layout: Layout, path: str | Path, max_real: int = 5000) -> None:
    """2D samples over held-out real points and the mode centres, on equal axes."""
    from matplotlib.figure import Figure

    meta = load_meta(layout.prepared)
    real = load_prepared(layout.prepared).test[:max_real]
    centers = meta.get("modes", {}).get("centers") or []
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    # Generated first, real on top: the real modes are tight (sigma 0.01-0.05) and would vanish
    # under thousands of generated points.
    ax.scatter(points[:, 0], points[:, 1], s=4, c="tab:blue", alpha=0.5, linewidths=0, label=f"generated ({len(points)})", rasterized=True)
    ax.scatter(real[:, 0], real[:, 1], s=2, c="black", linewidths=0, label=f"real, held out ({len(real)})", rasterized=True)
    if centers:
        c = torch.tensor(centers)
        ax.scatter(c[:, 0], c[:, 1], marker="x", s=40, c="tab:red", label=f"mode centres ({len(c)})")
    ax.set_aspect("equal")
    ax.set_title(f"{meta.get('name', 'data')}: samples")
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
