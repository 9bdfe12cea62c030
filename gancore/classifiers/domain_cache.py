"""The cache of trained domain classifiers under ``$GANCORE_CACHE_DIR/classifiers`` (see
:mod:`gancore.classifiers.domain`): an entry is the weights and a record, keyed by everything
that decides them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from gancore.classifiers.domain_networks import classifier_from_checkpoint
from gancore.io import torch_load, torch_save, write_json

log = logging.getLogger(__name__)

CACHE_ENV = "GANCORE_CACHE_DIR"
# The sources that decide a classifier's weights (the network, its training, the seeded streams):
# their text is part of the key, so that an edit to them is never served weights the old code
# trained (a hand-bumped version number was forgotten; DVC then reran prepare onto a cache hit).
_DECIDING_SOURCES = (
    Path(__file__).with_name("domain.py"),
    Path(__file__).with_name("domain_networks.py"),
    Path(__file__).parents[1] / "seeds.py",
)


@lru_cache(maxsize=1)
def code_digest() -> str:
    digest = hashlib.sha256()
    for path in _DECIDING_SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_directory() -> Path | None:
    """``$GANCORE_CACHE_DIR/classifiers`` (default ``~/.cache/gancore/classifiers``); None when set to off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("off", "none", "0", "false"):
        return None
    root = Path(value).expanduser() if value else Path.home() / ".cache" / "gancore"
    return root / "classifiers"


def cache_key(
    kind: str, arch: dict[str, Any], settings: dict[str, Any], images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> str:
    """Everything that decides the weights: the code, torch and the device type (kernels differ),
    the network, the settings and the data."""
    h = hashlib.sha256()
    header = {
        "code": code_digest(),
        "torch": torch.__version__,
        "device": torch.device(device).type,
        "kind": kind,
        "arch": arch,
        "settings": settings,
        "shape": list(images.shape),
        "dtype": str(images.dtype),
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for tensor in (images, labels.long()):
        h.update(tensor.detach().cpu().contiguous().numpy().data)
    return h.hexdigest()


def cache_load(key: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    root = cache_directory()
    if root is None:
        return None, {}
    weights, record = root / f"{key}.pt", root / f"{key}.json"
    if not (weights.exists() and record.exists()):
        return None, {}
    try:
        ckpt = torch_load(weights)
        classifier_from_checkpoint(ckpt)  # a damaged entry must not end up in prepared data
        return ckpt, json.loads(record.read_text())
    except Exception as exc:
        log.warning("ignoring unreadable classifier cache entry %s (%s); training again", weights, exc)
        return None, {}


def cache_store(key: str, ckpt: dict[str, Any], record: dict[str, Any]) -> None:
    root = cache_directory()
    if root is None:
        return
    try:
        torch_save(ckpt, root / f"{key}.pt")
        write_json(root / f"{key}.json", record)  # written last: its presence marks a complete entry
    except OSError as exc:
        log.warning("could not write the classifier cache in %s (%s); continuing without it", root, exc)
