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

import json
from pathlib import Path
from typing import Any

from gancore.config import Params, ParamsError
from gancore.errors import DataError
from gancore.io import read_json


def recorded(params: Params) -> dict[str, Any]:
    """The settings ``meta.json`` records under ``settings``."""
    return {"seed": params.seed, "data": params.data.model_dump(mode="json")}


def shown(value: Any) -> str:
    """A setting's value as ``-S`` takes it (``null``, ``"ring8"``, ``1000``)."""
    return json.dumps(value)


def other_settings(params: Params, meta: dict[str, Any]) -> list[str]:
    """The recorded settings ``params`` give otherwise, each as ``key: then, now`` (none for data
    prepared before they were recorded, or for a setting added since). Settings with the same
    effect pass (:func:`_differs`)."""
    saved = meta.get("settings")
    if not saved:
        return []
    differ = [] if saved.get("seed", params.seed) == params.seed else [f"seed: {shown(saved['seed'])} then, {shown(params.seed)} now"]
    then_data = saved.get("data") or {}
    source = (meta.get("source") or {}).get("path")
    for key, value in recorded(params)["data"].items():
        if key not in then_data or not _differs(key, then_data[key], value, params, meta):
            continue
        if key == "path" and source and value is not None:  # the files themselves
            differ.append(f"data.path: {shown(source)} then, {shown(str(_resolved(value)))} now")
        else:
            differ.append(f"data.{key}: {shown(then_data[key])} then, {shown(value)} now")
    return differ


def _resolved(path: str) -> Path:
    return Path(path).expanduser().resolve()


def _differs(key: str, then: Any, now: Any, params: Params, meta: dict[str, Any]) -> bool:
    """Whether ``data.<key>`` at ``now`` prepares other data than at ``then``. Settings with the
    same effect: ``path`` in the same words (the project's own file, also in a checkout on
    another machine or a moved project, where prepare's resolved path is another), or naming the
    file or folder prepare read (its resolved path); ``n_train`` and ``n_test`` null beside the
    count prepared (null takes every example, or the data set's default count, and a subset of
    all of them is all of them, in their order); ``image_size`` giving the shape prepared
    (null is the native size); ``on_bad_image`` where prepare left no image out (under ``fail``
    it succeeded, so none was bad); ``classifier_epochs`` where prepare trains no network
    (vector data get the mixture's posterior; an epoch count above 0 that trained none found no
    class labels)."""
    if then == now:
        return False
    source = meta.get("source") or {}
    if key == "path":
        return not (now is not None and source.get("path") and _resolved(now) == Path(source["path"]))
    if key in ("n_train", "n_test"):  # null is every example (a default count): the same where that many were prepared
        count = meta.get("count" if key == "n_train" else "count_test")
        return not (count is not None and None in (then, now) and (then if now is None else now) == count)
    if key == "image_size":
        return tuple(meta.get("shape") or ()) != params.data_shape
    if key == "on_bad_image":
        return bool(source.get("skipped"))
    if key == "classifier_epochs":
        classifier = (meta.get("classifier") or {}).get("kind")
        return not (classifier == "gaussian_posterior" or (classifier == "none" and bool(then)))
    return True


def made_otherwise(path: Path, differ: list[str]) -> DataError:
    """The refusal of prepared data (``path``: the file that records them) made under other settings."""
    return DataError(
        f"{path} was made under other settings ({'; '.join(differ)}): run `gan prepare` with these parameters, "
        "or run this stage with those it was made with"
    )


def check(params: Params, meta_path: Path) -> dict[str, Any]:
    """The prepared data's record, ``meta_path``; refused where it is missing (a stage after
    prepare would fail later, on a file it names less plainly) or where ``params`` ask for other data."""
    if not meta_path.exists():
        raise DataError(f"{meta_path} is missing: run `gan prepare` first (with this stage's parameters and --out)")
    meta = read_json(meta_path)
    differ = other_settings(params, meta)
    if differ:
        raise made_otherwise(meta_path, differ)
    return meta


def check_bins(params: Params, meta: dict[str, Any], meta_path: Path) -> None:
    """Refuse more NDB bins (diagnose's) than training examples were prepared (``meta``, read from
    ``meta_path``), and fewer real examples than the evaluation needs, where the stages that lead
    to the diagnosis start: a small points file trained, sampled and scored, then failed there; a
    folder of 50 images trained, then evaluate named a setting that could not help."""
    count, count_test = meta.get("count"), meta.get("count_test")
    problems = bins_problems(params, count) if isinstance(count, int) else []
    if isinstance(count, int) and isinstance(count_test, int):
        problems += real_count_problems(params, count, count_test)
    if problems:
        raise ParamsError(problems, f"params for the data in {meta_path.parent}")


def bins_problems(params: Params, count: int) -> list[tuple[str, str]]:
    """NDB's bins (k-means on the training examples) more than the ``count`` training examples."""
    bins = params.diagnose.ndb_bins
    if count >= bins:
        return []
    return [("diagnose.ndb_bins", f"{bins} bins exceed the {count} training examples: use at most {count}, or add examples to the data")]


def real_count_problems(params: Params, n_train: int, n_test: int) -> list[tuple[str, str]]:
    """The real examples the evaluation compares with (the reference split, up to
    ``evaluate.max_real``) and the other split, whose examples stand in for a faithful generator,
    too few for the splits and the k-NN metrics, each under the setting that can change it. Prepare
    checks them on the data it is about to write, evaluate again on the data it reads."""
    ev = params.evaluate
    on_train = ev.reference == "train"
    available, n_other = (n_train, n_test) if on_train else (n_test, n_train)
    n_real = min(available, ev.max_real or available)
    split_key, other_key = ("data.n_train", "data.n_test") if on_train else ("data.n_test", "data.n_train")
    # Raising max_real helps only where it cut the split; otherwise the split itself is too small.
    real_key = "evaluate.max_real" if n_real < available else split_key
    more = {
        real_key: f"raise {real_key}" + ("" if n_real < available else " or add examples to the data"),
        other_key: f"raise {other_key} or add examples to the data",
    }
    problems: list[tuple[str, str]] = []
    if n_real < ev.splits:
        problems.append(
            ("evaluate.splits", f"{n_real} real examples cannot fill {ev.splits} splits: {more[real_key]}, or lower evaluate.splits")
        )
    k = max(ev.pr_k, ev.dc_k)
    for key, what, n in ((real_key, "real examples", n_real), (other_key, "examples of the other split", n_other)):
        if n <= k:
            problems.append(
                (key, f"{n} {what} are too few for {k} nearest neighbours (evaluate.pr_k / evaluate.dc_k): {more[key]}, or lower the k")
            )
    return problems
