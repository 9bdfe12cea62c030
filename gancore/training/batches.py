"""The training data stream: endless seeded batches, resident on the device or gathered on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from gancore.data.prepared import to_model_range
from gancore.errors import TrainingError


def use_resident(mode: str, nbytes: int, max_gb: float) -> bool:
    return mode == "always" or (mode == "auto" and nbytes <= max_gb * 1e9)


class _Rows(torch.utils.data.Dataset):
    """Rows of an in-memory tensor, fetched a whole batch of indices at a time."""

    def __init__(self, data: Tensor):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Tensor) -> Tensor:
        return self.data.index_select(0, index)


class _IndexBatches(torch.utils.data.Sampler):
    def __init__(self, stream: BatchStream):
        self.stream = stream

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            start, stop = self.stream._advance()
            yield self.stream.perm[start:stop]


class BatchStream:
    """Endless batches in model range: a fresh seeded permutation each epoch, last partial batch dropped.

    The order depends only on the seed (a CPU generator in every mode), so keeping the data
    resident on the device or streaming it from the CPU gives the same batches. The CPU path is a
    ``DataLoader`` with ``num_workers=0``: it fetches only when asked, so the checkpointed
    position is exactly the number of batches consumed, and gathering rows of an in-memory tensor
    is cheaper than shipping them from worker processes.

    ``share=(rank, world)``: in distributed training every rank walks the same order and yields
    its own contiguous ``batch_size / world`` slice of each batch.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        seed: int,
        device: torch.device | str,
        resident: bool,
        channels_last: bool = False,
        share: tuple[int, int] = (0, 1),
    ):
        if batch_size > len(data):
            raise TrainingError(
                f"train.batch_size={batch_size} is larger than the {len(data)} training examples; lower it or prepare more data (data.n_train)"
            )
        rank, world = share
        if batch_size % world:
            raise TrainingError(f"train.batch_size={batch_size} does not split into {world} equal shares; use a multiple of {world}")
        self.n = len(data)
        self.batch_size = batch_size
        self.local = batch_size // world
        self.offset = rank * self.local
        self.device = torch.device(device)
        self.resident = resident
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0
        self._perm_on_device: Tensor | None = None
        if resident:
            self._data = data.to(self.device)
            self._loader: Iterator[Tensor] | None = None
        else:
            loader = torch.utils.data.DataLoader(
                _Rows(data),
                sampler=_IndexBatches(self),
                batch_size=None,
                num_workers=0,
                pin_memory=self.device.type == "cuda",
            )
            self._loader = iter(loader)

    def _advance(self) -> tuple[int, int]:
        if self.pos + self.batch_size > len(self.perm):
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
            self._perm_on_device = None
        start = self.pos
        self.pos += self.batch_size
        return start + self.offset, start + self.offset + self.local

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Tensor:
        if self._loader is None:
            start, stop = self._advance()
            if self._perm_on_device is None:
                self._perm_on_device = self.perm.to(self.device)
            x = self._data.index_select(0, self._perm_on_device[start:stop])
        else:
            x = next(self._loader).to(self.device, non_blocking=True)
        x = to_model_range(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])
        self._perm_on_device = None
