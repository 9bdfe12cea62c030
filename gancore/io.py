"""Atomic, durable file writes: a reader never sees a half-written checkpoint or result, and a
power cut after a write returned cannot leave an empty file behind its name.

Each write goes to a temporary file beside the target, which is flushed to disk (fsync) before
one rename puts it in place; the directory is fsynced after the rename so that the new name is
on disk too. A failed write (a full disk) leaves the previous file untouched and names the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gancore import failpoints
from gancore.errors import GanCoreError, WriteError, first_line


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (read in blocks: a file of any size)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            failpoints.hit(f"write:{path.name}", path=path)
            _fsync(tmp_path)
        except OSError as exc:
            kept = "the previous file is kept" if path.exists() else "nothing was written"
            raise WriteError(f"could not write {path}: {exc.strerror or first_line(exc)}; {kept}") from exc
        # mkstemp creates 0600 files; give results the usual umask-derived mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
        _fsync(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def copy_file(source: str | Path, target: str | Path) -> None:
    """``source``'s bytes at ``target``, written as :func:`atomic_path` writes."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def torch_save(obj: Any, path: str | Path) -> None:
    import torch

    # Saving through a file object keeps the zip's inner folder name fixed ("archive"), so equal
    # objects give byte-identical files (a path would name it after the random temp file).
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def torch_load(path: str | Path, error: type[GanCoreError] = GanCoreError, advice: str = "") -> Any:
    """``torch.load`` of a file gancore wrote: on the CPU, tensors and plain values only (no code
    runs from the file); an unreadable file raises ``error`` naming it, with ``advice``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(f"{path} could not be loaded ({type(exc).__name__}: {first_line(exc)})" + (f"; {advice}" if advice else "")) from None


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **kwargs)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
