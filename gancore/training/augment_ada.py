"""ADA's augmentation groups (Karras et al. 2020, ``augment.py`` of NVlabs/stylegan2-ada-pytorch,
with its published ranges), as ``augment.policy`` names beside DiffAugment's. Each transform of a
group acts on a sample with probability p (ADA's adaptive p; 1 without ``augment.adaptive``), and
a sample no transform chose comes out bit for bit itself. Images are in [-1, 1], as ADA's are.

* **Geometric** (``geometric``, ADA's ``geom``): isotropic scaling by 2^N(0, 0.2^2), a rotation
  uniform in +-180 degrees, anisotropic scaling by 2^N(0, 0.2^2) along x and its inverse along y,
  a second rotation, and a translation of N(0, 0.125^2) of the side along each axis. Each rotation
  acts with probability 1 - sqrt(1 - p), so that a sample is rotated with probability p, as ADA
  does; the product is one affine map, resampled once, bilinearly, with reflection at the border
  (ADA also reflects, but resamples through a wavelet filter at twice the resolution, which this
  does not). At p 1 every sample is rotated: G can then learn rotated data, the "leak" ADA's
  p < 0.8 avoids, so use it adaptively.
* **Pixel blitting** (``blit``, the first of ADA's default ``bgc`` pipeline): a mirror image
  (x-flip) with probability 1/2, 0-3 quarter turns, and a translation by whole pixels uniform in
  +-0.125 of the side, reflected at the border. No pixel is resampled: each output pixel is a copy
  of an input pixel. Mirror images and quarter turns are the data's symmetries on textures, aerial
  or microscope images and (mirror only) faces; on digits or clothes they are not, so use it
  adaptively there (ADA: G does not learn them while p stays under about 0.8).
* **Colour** (``ada_color``, the ``c`` of ``bgc``; DiffAugment's ``color`` is another, uniform
  one): in this order, brightness + N(0, 0.2^2), contrast x 2^N(0, 0.5^2) (about 0, mid-grey), a
  luma flip with probability 1/2 (the colour mirrored through the plane of grey-free colours: an
  inverted grey image), a hue rotation uniform in +-180 degrees about the grey axis, and saturation
  x 2^N(0, 1) (the distance from the grey axis). They compose into one 4 x 4 colour map per sample,
  applied once. A grey image is on the grey axis, which hue and saturation leave alone, so a
  one-channel image takes the first three (ADA's handling of ``L`` images); RGB takes all five.
  Half the luma flips invert an image, so use it adaptively too.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from gancore.training.augment import Draws

# ADA's pixel blitting: integer translation up to this share of the side, uniform.
XINT_MAX = 0.125
# ADA's geometric ranges: log2 of the scale factors' standard deviation, the fractional
# translation's standard deviation as a share of the side, rotations up to half a turn.
SCALE_STD, ANISO_STD, XFRAC_STD = 0.2, 0.2, 0.125
# ADA's colour ranges: brightness's standard deviation (added, in the images' [-1, 1] units), log2
# of contrast's and of saturation's factors' standard deviations; hue rotations up to half a turn.
BRIGHTNESS_STD, CONTRAST_STD, SATURATION_STD = 0.2, 0.5, 1.0


@functools.lru_cache(maxsize=64)
def _constant(values: tuple, device: torch.device) -> Tensor:
    """A small constant on ``device``, copied there once. Never mutated by its callers: a fresh
    ``torch.tensor(..., device="cuda")`` every step is a blocking host-to-device copy, which would
    make the host wait for the GPU on every augmented batch."""
    return torch.tensor(values, device=device)


def _affine(b: int, device: torch.device, **entries: Tensor) -> Tensor:
    """b 3 x 3 identities with ``entries`` (``m00=...``) set per sample."""
    m = torch.eye(3, device=device).repeat(b, 1, 1)
    for name, value in entries.items():
        m[:, int(name[1]), int(name[2])] = value
    return m


def _geometric_map(b: int, h: int, w: int, draw: Draws, p: Tensor | None) -> tuple[Tensor, Tensor]:
    """The geometric group (module doc) for b samples of h x w, each transform on a sample with
    probability ``p`` (None: every transform on every sample): the b maps from output to input
    pixels (3 x 3, about the centre) and which samples any transform chose."""
    dev = draw.device

    # Each rotation with 1 - sqrt(1 - p), so that a sample is rotated with probability p.
    p_rotation = None if p is None else 1 - torch.sqrt(1 - p.clamp(0, 1))
    touched = torch.zeros(b, dtype=torch.bool, device=dev)
    inverse = _affine(b, dev)

    def then(mask: Tensor, m: Tensor) -> None:
        nonlocal inverse, touched
        inverse = inverse @ torch.where(mask[:, None, None], m, torch.eye(3, device=dev))
        touched = touched | mask

    def rotation() -> None:
        mask, angle = draw.chosen(b, p_rotation), (draw.rand(b) * 2 - 1) * math.pi
        then(mask, _affine(b, dev, m00=angle.cos(), m01=angle.sin(), m10=-angle.sin(), m11=angle.cos()))

    scale = torch.exp2(draw.randn(b) * SCALE_STD)
    then(draw.chosen(b, p), _affine(b, dev, m00=1 / scale, m11=1 / scale))
    rotation()
    aniso = torch.exp2(draw.randn(b) * ANISO_STD)
    then(draw.chosen(b, p), _affine(b, dev, m00=1 / aniso, m11=aniso))
    rotation()
    shift = draw.randn(b, 2) * XFRAC_STD
    then(draw.chosen(b, p), _affine(b, dev, m02=-shift[:, 0] * w, m12=-shift[:, 1] * h))
    return inverse, touched


def _geometric(x: Tensor, draw: Draws, p: Tensor | None) -> Tensor:
    """``x`` through :func:`_geometric_map`'s maps: resampled once, bilinearly, reflected at the border."""
    b, c, h, w = x.shape
    # In float32 under bf16 autocast too: a map or grid in bf16 would misplace pixels by a tenth.
    with torch.autocast(x.device.type, enabled=False):
        inverse, touched = _geometric_map(b, h, w, draw, p)
        # In affine_grid's units the image spans -1..1 on each axis: pixels about the centre / (side / 2).
        to_pixels = torch.diag(_constant((w / 2, h / 2, 1.0), x.device))
        from_pixels = torch.diag(_constant((2 / w, 2 / h, 1.0), x.device))
        theta = (from_pixels @ inverse @ to_pixels)[:, :2]
        grid = torch.nn.functional.affine_grid(theta, [b, c, h, w], align_corners=False)
        moved = torch.nn.functional.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # Samples no transform chose stay bit for bit themselves (bilinear at pixel centres is not).
    return torch.where(touched[:, None, None, None], moved.to(x.dtype), x)


def gather_pixels(x: Tensor, index: Tensor) -> Tensor:
    """Output pixel (i, j) of sample n is pixel ``index[n, i, j]`` (row-major) of ``x[n]``, in
    every channel: one gather for the batch. Pixels are gathered with their channels together, so
    a channels_last batch (the trainer's) is read without a copy and the output is channels_last;
    :class:`~.augment.Augment` hands D its batch in the layout it came in."""
    b, c = x.shape[:2]
    pixels = x.permute(0, 2, 3, 1).reshape(b, -1, c)
    h, w = index.shape[1:]
    gathered = pixels.gather(1, index.reshape(b, h * w, 1).expand(b, h * w, c))
    return gathered.view(b, h, w, c).permute(0, 3, 1, 2)


def _reflect(index: Tensor, size: int) -> Tensor:
    """Indices past either border of 0..size-1 mirrored back inside it, the edge not repeated."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def _blit(x: Tensor, draw: Draws, p: Tensor | None) -> Tensor:
    """ADA's pixel blitting group (``xflip``, ``rotate90``, ``xint`` of stylegan2-ada-pytorch's
    ``augment.py``), each chosen for a sample with probability ``p`` (None: every sample): a mirror
    image with probability one half, a rotation by 0, 90, 180 or 270 degrees, a translation by a
    whole number of pixels uniform within XINT_MAX of the side, reflected at the border. Every
    transform moves whole pixels, so each output pixel is a copy of an input pixel, with no
    resampling; rotations by 90 degrees need square images (the product's are)."""
    b, _, h, w = x.shape
    if h != w:
        raise ValueError(f"augmentation blit rotates by 90 degrees and needs square images, not {h} x {w}")

    flip = draw.chosen(b, p) & (draw.randint(0, 2, b) == 1)
    quarter = draw.randint(0, 4, b) * draw.chosen(b, p)
    shift = torch.round((draw.rand(b, 2) * 2 - 1) * XINT_MAX * w).long() * draw.chosen(b, p)[:, None]
    # Where each output pixel comes from, traced back through the three in reverse order, so that
    # the batch is gathered once. After the shift (reflected), a quarter turn (torch.rot90's
    # direction) takes (row, col) from (a row + b col + c, d row + e col + f), one row of
    # ``turns`` each; the mirror, done first, is undone last: col -> w - 1 - col.
    side = torch.arange(h, device=x.device)[None]
    ys = _reflect(side - shift[:, 1:], h)[:, :, None]
    xs = _reflect(side - shift[:, :1], w)[:, None, :]
    n = h - 1
    turns = _constant(((1, 0, 0, 0, 1, 0), (0, 1, 0, -1, 0, n), (-1, 0, n, 0, -1, n), (0, -1, n, 1, 0, 0)), x.device)
    m = turns[quarter]
    m = torch.where(flip[:, None], torch.cat([m[:, :3], -m[:, 3:5], n - m[:, 5:]], 1), m)[:, :, None, None]
    rows = m[:, 0] * ys + m[:, 1] * xs + m[:, 2]
    cols = m[:, 3] * ys + m[:, 4] * xs + m[:, 5]
    return gather_pixels(x, rows * w + cols)


def color_maps(brightness: Tensor, contrast: Tensor, lumaflip: Tensor, hue: Tensor, saturation: Tensor) -> Tensor:
    """b 4 x 4 homogeneous colour maps (RGB and 1) from per-sample parameters, ADA's order: add
    ``brightness`` to each channel, scale by ``contrast``, mirror through the plane orthogonal to
    grey where ``lumaflip`` is 1, rotate the hue by ``hue`` radians about grey (right-handed: a
    third of a turn takes red to green), scale the distance from grey by ``saturation``."""
    b, dev = brightness.shape[0], brightness.device
    eye = torch.eye(3, device=dev)
    v = torch.full((3,), 3**-0.5, device=dev)  # the grey (luma) axis
    grey = torch.outer(v, v)
    cross = _constant(((0.0, -1.0, 1.0), (1.0, 0.0, -1.0), (-1.0, 1.0, 0.0)), dev) * 3**-0.5  # v x .
    cos, sin = hue.cos()[:, None, None], hue.sin()[:, None, None]
    rotate = eye * cos + cross * sin + grey * (1 - cos)  # Rodrigues
    flip = eye - 2 * grey * lumaflip[:, None, None]
    saturate = grey + (eye - grey) * saturation[:, None, None]
    linear = saturate @ rotate @ flip * contrast[:, None, None]
    maps = torch.eye(4, device=dev).repeat(b, 1, 1)
    maps[:, :3, :3] = linear
    maps[:, :3, 3] = linear.sum(dim=2) * brightness[:, None]  # the brightness shift, mapped alike
    return maps


def _color_parameters(b: int, draw: Draws, p: Tensor | None, rgb: bool) -> tuple[dict[str, Tensor], Tensor]:
    """ADA's colour draws for b samples, each transform chosen with probability ``p`` (None: all),
    as :func:`color_maps` takes them (identity values where not chosen), and which samples any
    transform chose. Hue and saturation only for RGB."""
    touched = torch.zeros(b, dtype=torch.bool, device=draw.device)

    def pick(value: Tensor, identity: float) -> Tensor:
        nonlocal touched
        mask = draw.chosen(b, p)
        touched = touched | mask
        return torch.where(mask, value, identity)

    zeros = torch.zeros(b, device=draw.device)
    parameters = {
        "brightness": pick(draw.randn(b) * BRIGHTNESS_STD, 0.0),
        "contrast": pick(torch.exp2(draw.randn(b) * CONTRAST_STD), 1.0),
        "lumaflip": pick(draw.randint(0, 2, b).float(), 0.0),
        "hue": pick((draw.rand(b) * 2 - 1) * math.pi, 0.0) if rgb else zeros,
        "saturation": pick(torch.exp2(draw.randn(b) * SATURATION_STD), 1.0) if rgb else zeros + 1,
    }
    return parameters, touched


def _ada_color(x: Tensor, draw: Draws, p: Tensor | None) -> Tensor:
    """ADA's colour group (module doc) on RGB or one-channel images, one map per sample."""
    b, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"augmentation ada_color needs RGB (3 channels) or grey (1 channel) images, not {c} channels")
    with torch.autocast(x.device.type, enabled=False):  # the maps in float32 under bf16 autocast too
        parameters, touched = _color_parameters(b, draw, p, rgb=c == 3)
        maps = color_maps(**parameters)
        # Pixel-major (b, h*w, c): a view of a channels_last batch (the trainer's), read without a copy.
        pixels = x.float().permute(0, 2, 3, 1).reshape(b, h * w, c)
        if c == 3:
            out = torch.baddbmm(maps[:, None, :3, 3], pixels, maps[:, :3, :3].transpose(1, 2))
        else:  # a grey pixel g is (g, g, g): the mean channel of its image under the map
            row = maps[:, :3].mean(dim=1, keepdim=True)
            out = pixels * row[:, :, :3].sum(dim=2, keepdim=True) + row[:, :, 3:]
        out = out.view(b, h, w, c).permute(0, 3, 1, 2)
    return torch.where(touched[:, None, None, None], out.to(x.dtype), x)


# ADA's groups by policy name: each takes the images, the draws and p (None: every sample).
GROUPS = {"geometric": _geometric, "blit": _blit, "ada_color": _ada_color}
