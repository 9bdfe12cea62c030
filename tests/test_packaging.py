"""pyproject.toml lists every package (setuptools' find() cannot rename flows/ and plugins/ to
their install names, so the list is written out): a package missing from it would be left out of
the installed distribution."""

from __future__ import annotations

import tomllib

from helpers import REPO


def test_every_package_folder_is_listed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    renamed = {folder: name for name, folder in config["package-dir"].items()}
    found = set()
    for init in REPO.glob("*/**/__init__.py"):
        parts = init.parent.relative_to(REPO).parts
        if parts[0] in ("gancore", *renamed) and "__pycache__" not in parts:
            found.add(".".join([renamed.get(parts[0], parts[0]), *parts[1:]]))
    assert found == listed
