"""Raw inputs of the torchvision data sets, under ``layout.raw`` in torchvision's layout.

Order of sources for each archive: already in ``layout.raw``; else copied from the read-only
mirror ``$GANCORE_DATASETS_DIR`` (same layout); else downloaded by torchvision. Every archive is
checked against the md5 torchvision publishes before anything is read, and its sha256 goes into
``meta.raw_sha256`` (keys relative to ``layout.raw``) so a prepared set names the exact bytes it came
from.
"""

from __future__ import annotations

import hashlib
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gancore.datasets import dataset
from gancore.errors import DataError
from gancore.io import copy_file
from gancore.layout import DATASETS_ENV, datasets_mirror


@dataclass(frozen=True)
class Archive:
    path: str  # relative to layout.raw (and to the mirror)
    md5: str


def dataset_class(name: str) -> Any:
    """The torchvision class that fetches data set ``name`` (its spec's ``torchvision``)."""
    import torchvision.datasets

    spec = dataset(name)
    if spec.torchvision is None:
        raise DataError(f"{name} is not fetched through torchvision ({spec.fetch})")
    return getattr(torchvision.datasets, spec.torchvision)


def archives(cls: Any) -> list[Archive]:
    """The files torchvision downloads for ``cls``, read from the class so they follow torchvision."""
    if hasattr(cls, "resources"):  # MNIST family: root/<ClassName>/raw/<file>.gz
        return [Archive(f"{cls.__name__}/raw/{file}", md5) for file, md5 in cls.resources]
    return [Archive(cls.filename, cls.tgz_md5)]  # CIFAR family: root/<file>.tar.gz


def digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file in one read."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _copy_from_mirror(archive: Archive, raw: Path, mirror: Path | None) -> Path | None:
    """Copy ``archive`` from the mirror into ``raw`` when the mirror has it; return the source."""
    source = mirror / archive.path if mirror else None
    if source is None or not source.is_file():
        return None
    copy_file(source, raw / archive.path)
    return source


def _verified_sha256(archive: Archive, raw: Path, source: Path | None = None) -> str:
    md5, sha = digests(raw / archive.path)
    if md5 != archive.md5:
        origin = f" (copied from {source})" if source else ""
        raise DataError(
            f"raw file {raw / archive.path}{origin} is corrupted: md5 {md5}, expected {archive.md5}; "
            "delete it so that `gan prepare` fetches it again"
        )
    return sha


def _missing_message(name: str, missing: list[Archive], raw: Path, mirror: Path | None, exc: Exception) -> str:
    files = ", ".join(f"{a.path} (md5 {a.md5})" for a in missing)
    where = f"not in the mirror {mirror}" if mirror else f"no mirror set ({DATASETS_ENV})"
    reason = " ".join(str(exc).split()) or type(exc).__name__  # torchvision's reasons span lines
    return (
        f"raw files for {name} are missing from {raw}: {files}; {where}, and the download failed: {reason}. "
        f"Put the files there, or point {DATASETS_ENV} at a folder holding them in torchvision's layout"
    )


def load_torchvision(name: str, raw: Path) -> tuple[Any, Any, dict[str, str]]:
    """Train split, test split (torchvision datasets) and ``{archive path: sha256}`` for ``name``."""
    cls = dataset_class(name)
    needed = archives(cls)
    mirror = datasets_mirror()
    sha: dict[str, str] = {}
    for archive in needed:
        source = None if (raw / archive.path).is_file() else _copy_from_mirror(archive, raw, mirror)
        if (raw / archive.path).is_file():
            sha[archive.path] = _verified_sha256(archive, raw, source)
    missing = [a for a in needed if a.path not in sha]
    try:
        # download=True downloads only what is missing, checks md5 and extracts; with every
        # archive in place it touches no network.
        train = cls(root=str(raw), train=True, download=True)
        test = cls(root=str(raw), train=False, download=False)
    except (RuntimeError, OSError, urllib.error.URLError) as exc:
        if missing:
            raise DataError(_missing_message(name, missing, raw, mirror, exc)) from None
        raise DataError(
            f"raw files for {name} under {raw} could not be read ({exc}); delete its extracted files there and prepare again"
        ) from None
    for archive in missing:  # fetched by torchvision just now
        if not (raw / archive.path).is_file():
            raise DataError(
                f"raw archive {raw / archive.path} (md5 {archive.md5}) is missing although extracted files exist; "
                f"meta.raw_sha256 records the archives: put it back, or delete the extracted files of {name} and prepare again"
            )
        sha[archive.path] = _verified_sha256(archive, raw)
    return train, test, dict(sorted(sha.items()))
