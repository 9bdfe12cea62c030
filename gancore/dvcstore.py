"""Prepared data in the project's DVC cache: their version (hash), storing and restoring them.

``dvc repro`` commits ``data/prepared`` to ``.dvc/cache`` under its md5 (``<hash>.dir``). The
Prefect prepare task does the same for the directory it wrote, with DVC's own object store, so the
same prepared data have the same version whichever orchestrator made them, are stored once, and a
cached prepare task (which returns only the version) is materialised in a new run directory by
checking that version out of the cache. DVC is imported inside the functions: the core runs
without it (then :func:`data_version` is None).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["data_version", "is_dvc_repo", "restore", "store"]


def data_version(path: str | Path) -> str | None:
    """The DVC hash (``<md5>.dir``) of a prepared-data directory, computed as ``dvc`` computes an
    output's hash, so it equals the one ``dvc.lock`` records for ``data/prepared``."""
    path = Path(path)
    if not path.is_dir():
        return None
    try:
        from dvc_data.hashfile.build import build
        from dvc_data.hashfile.db import HashFileDB
        from dvc_objects.fs.local import LocalFileSystem
        from dvc_objects.fs.memory import MemoryFileSystem
    except ImportError:  # a machine with the core only: no DVC, no version tag
        return None

    _, _, obj = build(HashFileDB(MemoryFileSystem(), "/staging"), str(path.resolve()), LocalFileSystem(), "md5", dry_run=True)
    return str(obj.hash_info.value)


def is_dvc_repo(root: str | Path) -> bool:
    return (Path(root) / ".dvc").is_dir()


def _cache(root: str | Path) -> Any:
    from dvc.repo import Repo

    # The repository's configured cache (``.dvc/cache`` unless cache.dir says otherwise). Only
    # the cache is used, so git is not needed (a deployment's working copy may have none).
    with Repo(str(root), config={"core": {"no_scm": True}}) as repo:
        return repo.cache.local


def store(directory: str | Path, root: str | Path) -> str:
    """Commit ``directory`` to the DVC cache of the repository at ``root``; return its version."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.transfer import transfer

    odb = _cache(root)
    staging, _, obj = build(odb, str(Path(directory).resolve()), odb.fs, "md5")
    transfer(staging, odb, {obj.hash_info}, shallow=False, hardlink=False)
    return str(obj.hash_info.value)


def restore(version: str, directory: str | Path, root: str | Path) -> bool:
    """Check ``version`` out of the DVC cache into ``directory``; False if the cache lacks any of it."""
    from dvc_data.hashfile.checkout import checkout
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree
    from dvc_objects.errors import ObjectFormatError

    odb = _cache(root)
    try:
        tree = Tree.load(odb, HashInfo("md5", version))
    except (FileNotFoundError, ObjectFormatError):  # not in the cache, or a damaged .dir file
        return False
    if not all(odb.exists(hash_info.value) for _, _, hash_info in tree):
        return False  # e.g. after `dvc gc`: the listing survived, some files did not
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    checkout(str(directory.resolve()), odb.fs, tree, odb)
    return True
