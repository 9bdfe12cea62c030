"""Training checkpoints: what identifies a run, and reading/writing ``checkpoints/last.pt``.

A checkpoint may only be resumed by the run that wrote it. "The run" is everything that changes
the trained weights: the seed, the data, model, loss and train sections (less the keys that only
say how long, how often or where), and the content of the prepared data. The checkpoint stores
that identity in full, so a refusal can name exactly which keys differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gancore.config import Params
from gancore.datasets import REGISTRY as DATASETS
from gancore.errors import TrainingError
from gancore.io import torch_load, torch_save
from gancore.names import parse_policy
from gancore.params_tree import flatten

FORMAT = 2

# Keys that do not change the trained weights: how long (steps: a longer run continues a shorter
# one), how often to save or log, where the data lives, which generator the monitor keeps, and the
# evaluation classifier prepared beside the data. The monitor's interval changes the weights only
# when it acts on collapse (on_collapse: stop or rollback): see run_identity.
RESULT_NEUTRAL = {
    "train": ("steps", "checkpoint_every", "log_every", "resident_data", "resident_max_gb", "keep_best", "devices", "channels_last"),
    "data": ("classifier_epochs", "on_bad_image"),
}
SECTIONS = ("seed", "data", "model", "loss", "train", "augment", "diagnose", "prepared_data", "world_size")
# What the monitor's verdict depends on besides the model: where it acts on collapse (stop,
# rollback) these change the weights too (the monitor's image classifier is trained for
# data.classifier_epochs in prepare).
VERDICT_SETTINGS = {"diagnose": ("confidence", "duplicate_fraction"), "data": ("classifier_epochs",)}
# And where the monitor tests the rows outside every cluster (a points file's tested background):
# the cells they are cut into. Elsewhere it reads nothing of it, so older checkpoints still resume.
OUTSIDE_VERDICT_SETTINGS = ("ndb_bins",)


def run_identity(
    params: Params,
    prepared_data: str,
    model_options: dict[str, Any] | None = None,
    world_size: int = 1,
    outside_tested: bool = False,
    legacy_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters that define a run's results, by section, plus the prepared data's hash.

    ``model_options``: the architecture's options resolved over its defaults, so that a plugin
    whose defaults changed since the checkpoint is a different run too. ``legacy_options``: the
    architecture's ``legacy`` (options added later, with the value that checkpoints written
    before trained with), left out where they have that value. ``outside_tested``: the monitor
    tests the rows outside every cluster (:func:`gancore.background.tested_background`).
    """
    dump = params.model_dump(mode="json")
    identity: dict[str, Any] = {"seed": dump["seed"]}
    for section in ("data", "model", "loss", "train"):
        neutral = RESULT_NEUTRAL.get(section, ())
        identity[section] = {k: v for k, v in dump[section].items() if k not in neutral}
    if params.training_seed == params.seed:  # null, or the top-level seed: the same streams, and older checkpoints resume
        identity["train"].pop("seed")
    if params.train.lr_decay > 0:  # the schedule ends at train.steps: a longer run is another run
        identity["train"]["steps"] = params.train.steps
    if params.train.on_collapse == "continue":  # the monitor only watches: it cannot change the weights
        for key in ("monitor_every", "max_rollbacks"):
            identity["train"].pop(key, None)
    else:  # its verdicts stop or roll back training: what they depend on is part of the run
        keys = VERDICT_SETTINGS["diagnose"] + (OUTSIDE_VERDICT_SETTINGS if outside_tested else ())
        identity["diagnose"] = {k: dump["diagnose"][k] for k in keys}
        identity["data"].update({k: dump["data"][k] for k in VERDICT_SETTINGS["data"]})
    if params.augment.policy.strip():  # augmentation changes the weights; off, old checkpoints still resume
        identity["augment"] = dump["augment"]
        if params.augment.signal == "r_t":  # the default, as before the signal existed: those checkpoints resume
            identity["augment"].pop("signal")
        if not params.augment.adaptive:  # p is fixed at 1: what steers it changes nothing
            for key in ("target", "kimg", "signal", "interval"):
                identity["augment"].pop(key, None)
        if "jitter" not in parse_policy(params.augment.policy):  # the noise's width, for a policy without noise
            identity["augment"].pop("jitter")
    if model_options is not None:
        options, legacy = (json.loads(json.dumps(d, sort_keys=True)) for d in (model_options, legacy_options or {}))
        identity["model"]["options"] = {k: v for k, v in options.items() if k not in legacy or legacy[k] != v}
    identity["prepared_data"] = prepared_data
    if world_size > 1:  # each rank trains on its share of every batch: another split, another run
        identity["world_size"] = world_size
    return identity


def identity_digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


# What a key left out of an identity stands for, where that is not "absent" (run_identity).
LEFT_OUT = {"train.seed": "null (the top-level seed)", "world_size": "1"}
# How a key that is not a setting is named in a mismatch.
KEY_WORDS = {"world_size": "processes training it, set by train.devices or torchrun's --nproc-per-node"}


def _shown(flat: Mapping[str, Any], key: str) -> str:
    return repr(flat[key]) if key in flat else LEFT_OUT.get(key, "'(absent)'")


def describe_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """Which sections differ, key by key: ``loss (loss.name: 'hinge' in the checkpoint, 'minimax' now)``."""
    old, new = flatten(saved), flatten(current)
    differ = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    # A key that counts on one side only mostly follows from one that changed (on_collapse: stop
    # makes the monitor's verdict settings count): the changed keys lead, the others are named
    # after them, not as five settings to restore that the user never touched.
    changed = {k for k in differ if k in old and k in new} or differ
    parts = []
    for section in SECTIONS:
        keys = sorted(k for k in changed if k == section or k.startswith(section + "."))
        diffs = [f"{KEY_WORDS.get(k, k)}: {_shown(old, k)} in the checkpoint, {_shown(new, k)} now" for k in keys]
        if diffs:
            parts.append(f"{section} ({'; '.join(diffs)})")
    text = ", ".join(parts) or "(no section differs: the checkpoint's identity is malformed)"
    now_only, then_only = sorted(k for k in differ - changed if k in new), sorted(k for k in differ - changed if k in old)
    if now_only:
        text += f"; with that, these count now and did not then: {', '.join(now_only)}"
    if then_only:
        text += f"; with that, these counted then and do not now: {', '.join(then_only)}"
    return text


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    torch_save({"format": FORMAT, **state}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint as saved, on the CPU; everything in it is tensors and plain values."""
    state = torch_load(
        path,
        TrainingError,
        "it is damaged (e.g. cut short by a crash or a full disk): run `gan train --restart` to start over, or delete it",
    )
    if state.get("format") != FORMAT:
        raise TrainingError(
            f"checkpoint {path} has format {state.get('format')!r}, this gancore writes {FORMAT}; run `gan train --restart`"
        )
    return state


def _apart_only_in_words_for_the_same_data(saved: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether two identities differ only in ``data.*`` settings over the same prepared data: the
    data check passes settings with the same effect (``n_train`` null beside the count prepared,
    ``data.path`` naming the same file otherwise), and the data's content is in the identity. The
    monitor's verdict settings among them still count (:data:`VERDICT_SETTINGS`) where they change
    what it reads: the image classifier prepare trains (vector data get a Gaussian posterior
    whatever ``classifier_epochs``, which the data check passes too)."""
    if saved.get("prepared_data") != current.get("prepared_data"):
        return False
    spec = DATASETS.get(str((current.get("data") or {}).get("name")))
    kept = VERDICT_SETTINGS["data"] if spec is None or spec.kind == "image" else ()
    a, b = ({**i, "data": {k: v for k, v in (i.get("data") or {}).items() if k in kept}} for i in (saved, current))
    return identity_digest(a) == identity_digest(b)


def check_resumable(path: Path, state: dict[str, Any], identity: dict[str, Any], steps: int, setting: str = "train.steps") -> None:
    """Refuse a checkpoint written by another run or one that is past ``steps`` (``setting``'s value)."""
    if state["digest"] != identity_digest(identity) and not _apart_only_in_words_for_the_same_data(state["identity"], identity):
        raise TrainingError(
            f"checkpoint {path} (step {state['step']}) was written by a different run; parameters "
            f"differ in: {describe_mismatch(state['identity'], identity)}. Restore those parameters "
            "to continue it, or run `gan train --restart` to discard it and start over"
        )
    if state["step"] > steps:
        raise TrainingError(
            f"checkpoint {path} is at step {state['step']}, beyond {setting}={steps}; "
            f"set {setting} >= {state['step']} to continue, or run `gan train --restart`"
        )
