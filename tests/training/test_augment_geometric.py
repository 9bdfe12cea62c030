"""ADA's geometric group (``augment.policy: geometric``): its ranges from its maps, the images
following the maps, its per-transform probabilities, and float32 under autocast."""

from __future__ import annotations

import math

import pytest
import torch

from gancore.training.augment import Augment
from gancore.training.augment_ada import _geometric_map

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))]

SIDE = 64


def _blobs(n: int, device: str, long: float, wide: float) -> torch.Tensor:
    """n copies of a Gaussian blob at the centre of a SIDE x SIDE image, ``long`` pixels (s.d.)
    along x and ``wide`` along y."""
    c = torch.arange(SIDE, dtype=torch.float32, device=device) - (SIDE - 1) / 2
    blob = torch.exp(-(c[None, :] ** 2) / (2 * long**2) - (c[:, None] ** 2) / (2 * wide**2))
    return blob.expand(n, 1, SIDE, SIDE).contiguous()


def _moments(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's centroid (x, y; pixels from the centre) and its principal axis's angle to x."""
    c = torch.arange(SIDE, dtype=torch.float32, device=y.device) - (SIDE - 1) / 2
    w = y[:, 0].clamp_min(0)
    mass = w.sum(dim=(1, 2))
    mx, my = (w * c[None, None, :]).sum(dim=(1, 2)) / mass, (w * c[None, :, None]).sum(dim=(1, 2)) / mass
    dx, dy = c[None, None, :] - mx[:, None, None], c[None, :, None] - my[:, None, None]
    cxx, cyy, cxy = ((w * dx * dx).sum(dim=(1, 2)), (w * dy * dy).sum(dim=(1, 2)), (w * dx * dy).sum(dim=(1, 2)))
    return mx, my, 0.5 * torch.atan2(2 * cxy, cxx - cyy)


@pytest.mark.parametrize("device", DEVICES)
def test_geometric_draws_adas_ranges_and_resamples_by_its_maps(device):
    """ADA's geometric group at p 1, from its maps (input pixels to output, about the centre):
    scaling, rotations and anisotropy act about the centre, so the centre moves by the translation
    alone, N(0, (0.125 x side)^2) along each axis; the area changes by the isotropic scale squared
    only, log2 of which is N(0, (2 x 0.2)^2). 4,000 samples: each s.d.'s estimate has a relative
    s.e. of 1 / sqrt(2 x 4,000) = 1.1 %. The images follow the maps: a centred blob's centroid lands
    on the translation wherever the shift stays clear of the reflected border (a mirror image there
    pulls the centroid back), and two rotations uniform in +-180 degrees leave a bar's axis uniform
    in angle, so half the bars end within 45 degrees of x (s.e. 0.011)."""
    n, dev = 4000, torch.device(device)
    a = Augment(["geometric"], dev, seed=0)
    state = a.generator.get_state()
    inverse, touched = _geometric_map(n, SIDE, SIDE, a.draw, None)
    forward = torch.linalg.inv(inverse.double())
    shift, area = forward[:, :2, 2], torch.linalg.det(forward[:, :2, :2])
    assert bool(touched.all())
    assert shift.std(dim=0).tolist() == pytest.approx([0.125 * SIDE] * 2, rel=0.05)
    assert float(shift.mean(dim=0).abs().max()) < 0.5  # s.e. 8 / sqrt(4000) = 0.13
    assert float(area.log2().std()) == pytest.approx(0.4, rel=0.05)
    a.generator.set_state(state)
    mx, my, _ = _moments(a(_blobs(n, device, 2.0, 2.0)))
    # Clear: the farthest input pixel an output pixel reads lies short of the blob's first mirror
    # image (a side away from the centre, less three of the blob's s.d. of 2 pixels).
    reach = (SIDE / math.sqrt(2) + shift.norm(dim=1)) * torch.linalg.matrix_norm(inverse[:, :2, :2].double(), ord=2)
    clear = reach < SIDE - 6
    assert int(clear.sum()) > n / 4
    # Bilinear resampling moves a 2-pixel blob's centroid by hundredths of a pixel (0.03-0.05 at most
    # over 1,500 clear samples, seeds 0-2); a transform off by a pixel or the wrong way fails.
    assert torch.allclose(torch.stack([mx, my], dim=1)[clear].double(), shift[clear], atol=0.1)
    _, _, angle = _moments(a(_blobs(2000, device, 6.0, 1.5)))
    assert float((angle.abs() < math.pi / 4).float().mean()) == pytest.approx(0.5, abs=0.05)
    # An untransformed bar lies along x: the measure itself is not what spreads the angles.
    assert float(_moments(_blobs(4, device, 6.0, 1.5))[2].abs().max()) < 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_adaptive_geometric_chooses_each_transform_with_p_and_leaves_the_rest_bit_for_bit(device):
    """Adaptive: scaling, anisotropy and translation each with probability p, each rotation with
    1 - sqrt(1 - p) (ADA: a sample is rotated with probability p), so a sample is left alone with
    probability (1 - p)^3 (1 - p) = (1 - p)^4: 1/16 at p 0.5 (4,000 samples, s.e. 0.004). At p 0
    nothing changes, and the untouched samples are exactly themselves, not resampled."""
    x = _blobs(4000, device, 6.0, 1.5)[:, :, ::4, ::4]  # 16 x 16: a fast test
    a = Augment(["geometric"], torch.device(device), seed=1, adaptive=True)
    assert torch.equal(a(x), x)
    a.p = torch.full((), 0.5, device=device)
    same = (a(x) == x).flatten(1).all(dim=1).float().mean()
    assert float(same) == pytest.approx(0.5**4, abs=0.015)
    half = a(x.to(torch.bfloat16))  # generated samples under bf16 autocast keep their precision
    assert half.dtype == torch.bfloat16 and torch.isfinite(half.float()).all()
    # Under autocast (training's, on CUDA) the maps and the resampling stay float32: the same images.
    state = a.generator.get_state()
    plain = a(x)
    a.generator.set_state(state)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        assert torch.equal(a(x), plain)
