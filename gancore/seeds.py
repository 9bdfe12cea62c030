"""Named random streams derived from one seed: the one way gancore turns ``params.seed`` into RNGs.

Every random choice draws from its own stream (``"train"``, ``"test"``, ``"train/noise"``,
``"sample"``, ...), so changing ``data.n_train`` does not change the test set, and the streams of
one seed are statistically independent: numpy's SeedSequence hashes (seed, stream name) into the
state. The values are stable across runs, machines and library versions.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive(seed: int, stream: str) -> int:
    """A 63-bit seed for the stream ``stream`` of ``seed``."""
    hi, lo = np.random.SeedSequence([seed, zlib.crc32(stream.encode())]).generate_state(2, np.uint32)
    # 63 bits: manual_seed accepts any value below 2**64, staying under 2**63 keeps it a plain int64 too.
    return ((int(hi) << 32) | int(lo)) & (2**63 - 1)


def generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` for the stream ``stream`` of ``seed``."""
    return torch.Generator(device=device).manual_seed(derive(seed, stream))


def subset(x: torch.Tensor, n: int, seed: int, stream: str) -> torch.Tensor:
    """A seeded random subset of ``n`` rows (all rows, in order, when there are no more than ``n``)."""
    if len(x) <= n:
        return x
    idx = torch.randperm(len(x), generator=generator(seed, stream))[:n]
    return x[idx]
