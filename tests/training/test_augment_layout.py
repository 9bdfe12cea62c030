"""Every image augmentation hands D the batch in the memory layout it came in (channels_last:
the trainer's; contiguous: ``train.channels_last: false``)."""

from __future__ import annotations

import pytest
import torch

from gancore.names import IMAGE_AUGMENTATIONS
from gancore.training.augment import Augment

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
def test_every_image_transform_keeps_the_batchs_memory_layout(device):
    """The trainer's batches are channels_last (D's convolutions run fastest on it; grid_sample
    and a channels-first colour map would hand D a contiguous batch), or contiguous under
    ``train.channels_last: false``, which a plugin that views its batch relies on."""
    x = torch.randn(6, 3, 8, 8, device=device)
    for name in IMAGE_AUGMENTATIONS:
        for adaptive in (False, True):
            outs = []
            for layout in (torch.channels_last, torch.contiguous_format):
                a = Augment([name], torch.device(device), seed=0, adaptive=adaptive)
                a.p = torch.full((), 0.5, device=device)
                outs.append(a(x.contiguous(memory_format=layout)))
                assert outs[-1].is_contiguous(memory_format=layout), (name, adaptive, layout)
            # The same values either way, up to the colour means' summation order (float32
            # rounding of values of order 1: a few 1e-7).
            torch.testing.assert_close(*outs, rtol=0, atol=1e-6)
