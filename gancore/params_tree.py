"""A params file's tree before validation (:mod:`gancore.config`): read from YAML (a key given
twice refused), ``--set key.path=value`` overrides applied to it, and flattened to
``section.key`` for trackers and hashes."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from gancore.errors import ParamsError


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ParamsError([(text, "an override must look like key.path=value, e.g. train.steps=500")], "--set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ParamsError([(key, f"value {raw!r} is not valid YAML: {exc}")], "--set") from None
    return key.split("."), value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ParamsError([(".".join(path), f"{part!r} is a value, not a section")], "--set")
            node = child
        node[path[-1]] = value
    return tree


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: the loader keeps the last
    one, so a second ``train:`` section silently dropped the first one's settings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is defined twice (lines {seen[key]} and {line}); keep one", key_node.start_mark
                )
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_params_tree(path: str | Path) -> dict[str, Any]:
    """The mapping a params file holds, its problems as :class:`ParamsError` (exit 2)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError([("--params", f"file {str(path)!r} does not exist; pass an existing params.yaml")], str(path))
    if not path.is_file():
        raise ParamsError([("--params", f"{str(path)!r} is not a file; pass a params.yaml")], str(path))
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as exc:
        raise ParamsError([("(file)", f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8")], str(path)) from None
    except OSError as exc:
        raise ParamsError([("--params", f"cannot be read: {exc.strerror or exc}")], str(path)) from None
    except yaml.YAMLError as exc:
        raise ParamsError([("(file)", f"not valid YAML: {exc}")], str(path)) from None
    if not isinstance(tree, dict):
        raise ParamsError(
            [
                (
                    "(top level)",
                    f"the file holds a {type(tree).__name__}, not a mapping of sections "
                    "(seed, device, data, model, ...): see the project's params.yaml",
                )
            ],
            str(path),
        )
    return tree
