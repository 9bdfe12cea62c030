"""The prepared-data contract shared by every stage after ``prepare``.

``data/prepared/`` holds ``data.pt`` (tensors, loadable with ``weights_only=True``) and
``meta.json``. Images are stored as uint8 ``[N, C, H, W]`` (a quarter of the memory of float32,
and cheap to keep resident on a GPU) and converted to float in [-1, 1] per batch by
:func:`to_model_range`; vector data are stored as float32 ``[N, d]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gancore.errors import PreparedDataError
from gancore.io import read_json, torch_load, torch_save, write_json
from gancore.layout import CLASSIFIER_FILE, DATA_FILE, META_FILE

__all__ = [
    "CLASSIFIER_FILE",
    "DATA_FILE",
    "META_FILE",
    "PreparedData",
    "load_meta",
    "load_prepared",
    "save_prepared",
    "to_model_range",
    "to_uint8",
]


@dataclass
class PreparedData:
    meta: dict[str, Any]
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta["shape"])

    @property
    def num_modes(self) -> int | None:
        return self.meta.get("modes", {}).get("count")

    def train_float(self) -> torch.Tensor:
        return to_model_range(self.train)

    def test_float(self) -> torch.Tensor:
        return to_model_range(self.test)

    def all_labels(self) -> torch.Tensor | None:
        """The labels of the prepared rows, training then test (None without both): a fitted
        mixture's real mode histogram. The test rows alone gave a rare cluster's mode no row at
        all (8 rows in 20,000), and a faithful generator's reverse KL was then undefined. A mixture
        part with no test row of its own is scored on the whole test split (``own_test`` false),
        whose labels are the other parts' modes: its own training rows alone, there."""
        if self.meta.get("own_test") is False:
            return self.train_labels
        if self.train_labels is None or self.test_labels is None:
            return None
        return torch.cat([self.train_labels, self.test_labels])

    def all_rows(self) -> torch.Tensor:
        """The rows :meth:`all_labels` labels, in its order (model range)."""
        if self.meta.get("own_test") is False:
            return self.train_float()
        return torch.cat([self.train_float(), self.test_float()])


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1]; float data pass through unchanged."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x.float()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> uint8 0..255 (rounded, clamped)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_prepared(directory: str | Path, data: PreparedData) -> None:
    directory = Path(directory)
    tensors = {"train": data.train.contiguous(), "test": data.test.contiguous()}
    if data.train_labels is not None:
        tensors["train_labels"] = data.train_labels.long().contiguous()
    if data.test_labels is not None:
        tensors["test_labels"] = data.test_labels.long().contiguous()
    torch_save(tensors, directory / DATA_FILE)
    write_json(directory / META_FILE, data.meta)


def load_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.exists():
        raise PreparedDataError(f"{path} is missing: run `gan prepare` first")
    return read_json(path)


def load_prepared(directory: str | Path) -> PreparedData:
    directory = Path(directory)
    meta = load_meta(directory)
    path = directory / DATA_FILE
    if not path.exists():
        raise PreparedDataError(f"{path} is missing: run `gan prepare` first")
    tensors = torch_load(path, PreparedDataError, "run `gan prepare` again")
    return PreparedData(
        meta=meta,
        train=tensors["train"],
        test=tensors["test"],
        train_labels=tensors.get("train_labels"),
        test_labels=tensors.get("test_labels"),
    )
