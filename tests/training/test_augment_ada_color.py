"""ADA's colour group (``augment.policy: ada_color``): the composed 4 x 4 maps against the five
transforms applied one by one in float64 (written the other way round: vector formulas, not
matrices), known colours, ADA's draws and probabilities, and its handling of grey images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gancore.training import augment_ada
from gancore.training.augment import Augment, Draws
from gancore.training.augment_ada import color_maps

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))]


def _one_by_one(rgb: np.ndarray, brightness: float, contrast: float, lumaflip: float, hue: float, saturation: float) -> np.ndarray:
    """One pixel (3,) through ADA's five colour transforms in order, in float64 vector form."""
    grey = np.full(3, 3**-0.5)
    x = rgb + brightness
    x = x * contrast
    x = x - 2 * lumaflip * grey * (grey @ x)  # Householder reflection through the plane orthogonal to grey
    x = x * math.cos(hue) + np.cross(grey, x) * math.sin(hue) + grey * (grey @ x) * (1 - math.cos(hue))  # Rodrigues
    on_axis = grey * (grey @ x)
    return on_axis + saturation * (x - on_axis)


def _draws(seed: int, device: str = "cpu") -> Draws:
    return Draws(torch.Generator(device).manual_seed(seed), torch.device(device))


def test_the_composed_maps_are_the_five_transforms_in_adas_order():
    gen = torch.Generator().manual_seed(0)
    n = 64
    parameters = {
        "brightness": torch.randn(n, generator=gen) * 0.2,
        "contrast": torch.exp2(torch.randn(n, generator=gen) * 0.5),
        "lumaflip": torch.randint(0, 2, (n,), generator=gen).float(),
        "hue": (torch.rand(n, generator=gen) * 2 - 1) * math.pi,
        "saturation": torch.exp2(torch.randn(n, generator=gen)),
    }
    pixels = torch.rand(n, 3, generator=gen) * 2 - 1
    maps = color_maps(**parameters)
    mapped = (maps[:, :3, :3] @ pixels[:, :, None])[:, :, 0] + maps[:, :3, 3]
    for i in range(n):
        expected = _one_by_one(pixels[i].double().numpy(), *(float(v[i]) for v in parameters.values()))
        # float32 products of factors up to about 4 (contrast x saturation): a few ulps of 4.
        np.testing.assert_allclose(mapped[i].numpy(), expected, atol=1e-5)
    assert torch.equal(maps[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(n, 4))


def test_known_colours():
    one, zero = torch.ones(1), torch.zeros(1)

    def through(pixel: list[float], **changes: torch.Tensor) -> torch.Tensor:
        m = color_maps(**{"brightness": zero, "contrast": one, "lumaflip": zero, "hue": zero, "saturation": one, **changes})[0]
        return m[:3, :3] @ torch.tensor(pixel) + m[:3, 3]

    red, green = [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]
    # A third of a turn about grey (mid-grey is 0 in [-1, 1]) takes red to green.
    torch.testing.assert_close(through(red, hue=torch.tensor([2 * math.pi / 3])), torch.tensor(green), atol=1e-6, rtol=0)
    # No saturation: every channel the pixel's mean.
    torch.testing.assert_close(through([0.6, -0.2, 0.1], saturation=zero), torch.full((3,), 0.5 / 3), atol=1e-6, rtol=0)
    # A luma flip inverts a grey pixel and keeps a grey-free colour's offsets from grey.
    torch.testing.assert_close(through([0.4, 0.4, 0.4], lumaflip=one), torch.full((3,), -0.4), atol=1e-6, rtol=0)
    torch.testing.assert_close(through([0.5, -0.5, 0.0], lumaflip=one), torch.tensor([0.5, -0.5, 0.0]), atol=1e-6, rtol=0)
    # Brightness first, then contrast about mid-grey: (x + b) c.
    torch.testing.assert_close(
        through([0.1, 0.2, 0.3], brightness=torch.tensor([0.1]), contrast=torch.tensor([2.0])), torch.tensor([0.4, 0.6, 0.8])
    )


def test_adas_draws_and_probabilities():
    n = 20_000
    # p None (no adaptive): every transform on every sample, with ADA's distributions. Standard
    # errors: a standard deviation's ~ sd / sqrt(2n) <= 0.005; a share's <= 0.0035; tolerances 4-6x.
    every, touched = augment_ada._color_parameters(n, _draws(0), None, rgb=True)
    assert touched.all()
    assert float(every["brightness"].std()) == pytest.approx(0.2, abs=0.005)
    assert float(torch.log2(every["contrast"]).std()) == pytest.approx(0.5, abs=0.02)
    assert float(torch.log2(every["saturation"]).std()) == pytest.approx(1.0, abs=0.03)
    assert set(every["lumaflip"].tolist()) == {0.0, 1.0} and float(every["lumaflip"].mean()) == pytest.approx(0.5, abs=0.02)
    hue = every["hue"]
    assert float(hue.abs().max()) <= math.pi and float(hue.var()) == pytest.approx(math.pi**2 / 3, rel=0.03)
    # Adaptive p: each transform chosen for a sample with probability p, the others left at identity.
    p = torch.tensor(0.3)
    some, touched = augment_ada._color_parameters(n, _draws(1), p, rgb=True)
    for name, identity in (("brightness", 0.0), ("contrast", 1.0), ("hue", 0.0), ("saturation", 1.0)):
        assert float((some[name] != identity).float().mean()) == pytest.approx(0.3, abs=0.015), name
    assert float(some["lumaflip"].mean()) == pytest.approx(0.15, abs=0.015)
    assert float(touched.float().mean()) == pytest.approx(1 - 0.7**5, abs=0.015)
    grey, touched = augment_ada._color_parameters(n, _draws(1), p, rgb=False)
    assert torch.equal(grey["hue"], torch.zeros(n)) and torch.equal(grey["saturation"], torch.ones(n))
    assert float(touched.float().mean()) == pytest.approx(1 - 0.7**3, abs=0.015)


@pytest.mark.parametrize("p", [None, 0.5])
def test_a_grey_image_takes_what_the_same_image_in_rgb_takes(p):
    """ADA's handling of one-channel images: the mean channel of the RGB result. Hue and saturation
    leave grey alone, so the grey path skips them; both paths draw the first three alike."""
    x = torch.rand(64, 1, 6, 6, generator=torch.Generator().manual_seed(2)) * 2 - 1
    chance = None if p is None else torch.tensor(p)
    grey = augment_ada._ada_color(x, _draws(5), chance)
    rgb = augment_ada._ada_color(x.expand(64, 3, 6, 6).contiguous(), _draws(5), chance)
    torch.testing.assert_close(grey, rgb.mean(dim=1, keepdim=True), atol=1e-6, rtol=0)
    torch.testing.assert_close(rgb, rgb[:, :1].expand_as(rgb), atol=1e-6, rtol=0)  # still grey
    assert not torch.equal(grey, x)


@pytest.mark.parametrize("device", DEVICES)
def test_untouched_samples_stay_themselves_and_autocast_keeps_the_maps_in_float32(device):
    x = torch.rand(32, 3, 8, 8, device=device) * 2 - 1
    a = Augment(["ada_color"], torch.device(device), seed=0, adaptive=True)
    assert torch.equal(a(x), x)  # p 0
    a.p = torch.full((), 0.5, device=device)
    state = a.generator.get_state()
    full = a(x)
    a.generator.set_state(state)
    with torch.autocast(device, dtype=torch.bfloat16):
        half = a(x.bfloat16())
    assert half.dtype == torch.bfloat16
    kept = (full == x).flatten(1).all(1)
    assert 0 < int(kept.sum()) < 32 and torch.equal(half[kept], x[kept].bfloat16())
    # The input in bf16 (8 bits of mantissa), mapped in float32 and rounded once more: a few bf16 steps.
    torch.testing.assert_close(half.float(), full, atol=0.06, rtol=0.02)


def test_ada_color_refuses_images_that_are_neither_rgb_nor_grey():
    with pytest.raises(ValueError, match=r"ada_color needs RGB \(3 channels\) or grey \(1 channel\) images, not 2 channels"):
        Augment(["ada_color"], torch.device("cpu"), seed=0)(torch.zeros(2, 2, 8, 8))
