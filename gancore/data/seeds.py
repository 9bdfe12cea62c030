"""Named random streams derived from one seed.

Train and test sets (and every other random choice in ``prepare``) draw from their own stream, so
changing ``data.n_train`` does not change the test set, and the streams of one seed are
statistically independent: numpy's SeedSequence hashes (seed, stream name) into the state.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for the stream ``stream`` of ``seed`` (stable across runs and platforms)."""
    hi, lo = np.random.SeedSequence([seed, zlib.crc32(stream.encode())]).generate_state(2, np.uint32)
    # 63 bits: manual_seed accepts any value below 2**64, staying under 2**63 keeps it a plain int64 too.
    return torch.Generator().manual_seed(((int(hi) << 32) | int(lo)) & (2**63 - 1))
