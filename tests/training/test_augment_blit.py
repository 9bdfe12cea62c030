"""ADA's pixel blitting group (``augment.policy: blit``): every output is one of the 8 mirror
images and quarter turns of its input, moved by whole pixels and reflected at the border, with
ADA's probabilities; checked exactly against a second implementation built from torch's own
flip, rot90 and reflect padding."""

from __future__ import annotations

import pytest
import torch

from gancore.training.augment import Augment

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))]

SIDE = 16
REACH = 2  # ADA's integer translation, at most 0.125 of the side, rounded: 2 pixels at 16


def _numbered(n: int, device: str) -> torch.Tensor:
    """n copies of a SIDE x SIDE image whose every pixel holds its own index, so that any two
    rearrangements of it differ."""
    return torch.arange(SIDE * SIDE, dtype=torch.float32, device=device).view(1, 1, SIDE, SIDE).expand(n, 1, SIDE, SIDE).contiguous()


def _candidates(image: torch.Tensor) -> dict[bytes, tuple[int, int, int, int]]:
    """Every (mirrored, quarter turns, shift down, shift right) of one image, made the other way
    round from the product: torch's reflect padding, then a crop."""
    out = {}
    for flip in (0, 1):
        mirrored = image.flip(-1) if flip else image
        for k in range(4):
            turned = torch.rot90(mirrored, k, dims=(-2, -1))
            padded = torch.nn.functional.pad(turned[None], [REACH] * 4, mode="reflect")[0]
            for dy in range(-REACH, REACH + 1):
                for dx in range(-REACH, REACH + 1):
                    moved = padded[..., REACH - dy : REACH - dy + SIDE, REACH - dx : REACH - dx + SIDE]
                    out[moved.cpu().numpy().tobytes()] = (flip, k, dy, dx)
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_blit_moves_whole_pixels_with_adas_draws(device):
    """At p 1 every sample is mirrored with probability 1/2 and turned by 0-3 quarter turns, so it
    ends as each of the 8 mirror images and turns with probability 1/8; it is then moved by a
    shift uniform in +-0.125 x 16 = +-2 pixels along each axis, rounded: -2 and 2 with 1/8 each,
    -1, 0 and 1 with 1/4 each. 4,000 samples: every share's s.e. is at most 0.007, and the
    tolerance of 0.03 is over 4 of them. Every output is exactly one of the 200 candidates: a
    transform that resampled, moved the wrong way or clamped at the border instead of reflecting
    matches none of them."""
    n = 4000
    y = Augment(["blit"], torch.device(device), seed=0)(_numbered(n, device))
    candidates = _candidates(_numbered(1, device)[0])
    assert len(candidates) == 8 * (2 * REACH + 1) ** 2  # all distinct: the match is unique
    found = torch.tensor([candidates[row.cpu().numpy().tobytes()] for row in y])
    turns = (found[:, 0] * 4 + found[:, 1]).bincount(minlength=8).float() / n
    assert turns.tolist() == pytest.approx([1 / 8] * 8, abs=0.03)
    for axis in (2, 3):
        shifts = (found[:, axis] + REACH).bincount(minlength=5).float() / n
        assert shifts.tolist() == pytest.approx([1 / 8, 1 / 4, 1 / 4, 1 / 4, 1 / 8], abs=0.03)


@pytest.mark.parametrize("device", DEVICES)
def test_adaptive_blit_chooses_each_transform_with_p(device):
    """Adaptive: the mirror, the turn and the shift are each chosen with probability p, as ADA
    draws them. A chosen mirror is a mirror with probability 1/2, a chosen turn is none with 1/4,
    a chosen shift is none with (1/4)^2 (both axes round to 0), so at p 0.5 a sample is left as it
    was with probability (1 - 0.25) (1 - 0.375) (1 - 0.5 x 15/16) = 0.249 (4,000 samples, s.e.
    0.007). At p 0 every sample is left alone. Under autocast, and in bf16, the output is the same
    pixels: nothing is computed, only moved."""
    x = _numbered(4000, device)
    a = Augment(["blit"], torch.device(device), seed=1, adaptive=True)
    assert torch.equal(a(x), x)
    a.p = torch.full((), 0.5, device=device)
    same = (a(x) == x).flatten(1).all(dim=1).float().mean()
    assert float(same) == pytest.approx(0.75 * 0.625 * (1 - 0.5 * 15 / 16), abs=0.03)
    state = a.generator.get_state()
    plain = a(x)
    a.generator.set_state(state)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        assert torch.equal(a(x), plain)
    a.generator.set_state(state)
    small = x.remainder(200)  # exact in bf16
    assert torch.equal(a(small.to(torch.bfloat16)).float(), plain.remainder(200))


def test_blit_refuses_images_that_are_not_square():
    with pytest.raises(ValueError, match="blit rotates by 90 degrees and needs square images, not 8 x 12"):
        Augment(["blit"], torch.device("cpu"), seed=0)(torch.zeros(2, 1, 8, 12))
