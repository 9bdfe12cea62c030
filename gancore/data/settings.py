"""What ``gan prepare`` was asked for, recorded in ``meta.json``, and the stages after it refused
where the parameters now ask for other data.

``gan prepare`` and then ``gan train -S data.n_train=1000`` trained the 50,000 points prepared,
and the run's record said 1,000; so did ``-S seed=3`` (another draw of the points, another split
and subset, another domain classifier). ``dvc repro`` and the Prefect flows prepare again where
these change; a stage run by hand did not, and said nothing.

Recorded: the seed and ``data.*``. The partition's own settings (``mixture.*``, ``model.pack``)
are in ``mixture.json`` (:func:`gancore.mixture.partition_info`). ``device`` is not: it changes
how prepare computes (the domain classifier's last bits), not which data it prepares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gancore.config import Params
from gancore.errors import DataError


def recorded(params: Params) -> dict[str, Any]:
    """The settings ``meta.json`` records under ``settings``."""
    return {"seed": params.seed, "data": params.data.model_dump(mode="json")}


def other_settings(params: Params, meta: dict[str, Any]) -> list[str]:
    """The recorded settings ``params`` give otherwise, each as ``key: then, now`` (none for data
    prepared before they were recorded, or for a setting added since). Settings with the same
    effect pass: ``data.path`` naming the same file, and ``data.on_bad_image`` where no image was
    left out (under ``fail`` prepare succeeded, so none was bad)."""
    saved = meta.get("settings")
    if not saved:
        return []
    now = recorded(params)
    differ = [] if saved.get("seed", params.seed) == params.seed else [f"seed: {saved['seed']!r} then, {params.seed!r} now"]
    then_data = saved.get("data") or {}
    for key, value in now["data"].items():
        if key not in then_data or then_data[key] == value:
            continue
        then = then_data[key]
        if key == "path" and then is not None and value is not None and _same_file(then, value):
            continue
        if key == "on_bad_image" and not (meta.get("source") or {}).get("skipped"):
            continue
        differ.append(f"data.{key}: {then!r} then, {value!r} now")
    return differ


def _same_file(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def made_otherwise(path: Path, differ: list[str]) -> DataError:
    """The refusal of prepared data (``path``: the file that records them) made under other settings."""
    return DataError(f"{path} was made under other settings ({'; '.join(differ)}): run `gan prepare` with these parameters")


def check(params: Params, meta_path: Path) -> None:
    """Refuse the prepared data that ``meta_path`` describes where ``params`` ask for other data;
    nothing to check where it is missing (the stage names that)."""
    if not meta_path.exists():
        return
    from gancore.io import read_json

    differ = other_settings(params, read_json(meta_path))
    if differ:
        raise made_otherwise(meta_path, differ)
