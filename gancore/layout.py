"""Where each stage reads and writes, relative to one output root (one per run)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# A local mirror of torchvision-layout raw data (e.g. ../shared/datasets); set by the Makefile
# and .ci/run when such a folder exists. Without it, data sets are downloaded.
DATASETS_ENV = "GANCORE_DATASETS_DIR"


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def raw(self) -> Path:
        """Raw inputs (downloaded or copied from the mirror); versioned by DVC."""
        return self.root / "data" / "raw"

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def checkpoints(self) -> Path:
        """Training state for resuming; deliberately outside ``models/`` (a DVC output)."""
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def train_log(self) -> Path:
        return self.metrics / "train_log.csv"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


def datasets_mirror() -> Path | None:
    value = os.environ.get(DATASETS_ENV)
    return Path(value) if value else None
