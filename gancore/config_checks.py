"""What the types of :mod:`gancore.config` cannot say: the parameters' rules across keys (a points
file needs data.path, an image policy does not fit vectors, keep_best needs the monitor, ...),
each problem as ``(key path, message naming what would be valid)``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gancore.losses import REGISTRY as LOSSES
from gancore.losses import boundary, without_boundary
from gancore.names import AUGMENTATIONS, FILE_DATASETS, IMAGE_AUGMENTATIONS, VECTOR_AUGMENTATIONS, parse_policy

if TYPE_CHECKING:  # pragma: no cover
    from gancore.config import Params


def augment_problems(params: Params) -> list[tuple[str, str]]:
    policy = parse_policy(params.augment.policy)
    text = params.augment.policy.strip()
    if text and len(policy) != text.count(",") + 1:
        return [("augment.policy", f"{text!r} has an empty name; give names separated by single commas, e.g. translation,cutout")]
    twice = sorted({p for p in policy if policy.count(p) > 1})
    if twice:
        return [("augment.policy", f"{', '.join(twice)} listed twice; each transform applies once, e.g. {','.join(dict.fromkeys(policy))}")]
    unknown = [p for p in policy if p not in AUGMENTATIONS]
    if unknown:
        return [("augment.policy", f"unknown {', '.join(map(repr, unknown))}; allowed: {', '.join(AUGMENTATIONS)} (comma-separated)")]
    fits = VECTOR_AUGMENTATIONS if params.data_kind == "vector" else IMAGE_AUGMENTATIONS
    wrong = [p for p in policy if p not in fits]
    if wrong:
        return [
            ("augment.policy", f"{', '.join(wrong)} cannot augment {params.data_kind} data ({params.data.name}); use {', '.join(fits)}")
        ]
    if params.augment.adaptive and not policy:
        return [("augment.adaptive", f"needs augment.policy, e.g. {','.join(fits)}")]
    if params.augment.adaptive and boundary(params.loss.name) is None:
        with_boundary = ", ".join(name for name in LOSSES if name not in without_boundary())
        return [
            (
                "augment.adaptive",
                f"steers p by D's calls of real and fake (r_t = E[sign(D(x) - boundary)]), and loss.name={params.loss.name} has no "
                f"decision boundary (adding a constant to its critic changes neither its loss nor its penalty); set "
                f"augment.adaptive=false (the policy on every sample, DiffAugment's way), or use a loss with one: {with_boundary}",
            )
        ]
    if params.augment.signal != "r_t" and not params.augment.adaptive:
        return [("augment.signal", f"{params.augment.signal} steers the adaptive p: set augment.adaptive=true, or leave the signal at r_t")]
    return []


def monitored_steps(params: Params) -> tuple[int, str]:
    """The steps ``train.monitor_every`` must check within, and their key: a mixture's parts train
    ``mixture.steps`` (at least: some train ``train.steps``, :func:`gancore.partition.part_steps`,
    which the partition decides after this check can run)."""
    if params.mixture.enabled and params.mixture.steps is not None:
        return params.mixture.steps, "mixture.steps"
    return params.train.steps, "train.steps"


def semantic_problems(params: Params, check_plugins: bool) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    d, spec = params.data, params.dataset
    if spec.reads_path and spec.kind == "image":
        if not d.path:
            problems.append(("data.path", f"required for data.name={d.name}: {spec.summary}"))
        elif not Path(d.path).expanduser().is_dir():
            what = "is a file" if Path(d.path).expanduser().is_file() else "does not exist"
            problems.append(("data.path", f"{d.path} {what}; give data.name={d.name} a folder of images (or one subfolder per class)"))
        if not d.image_size and spec.shape is None:
            problems.append(("data.image_size", f"required for data.name={d.name}, e.g. 64"))
    elif spec.reads_path:
        if not d.path:
            problems.append(("data.path", f"required for data.name={d.name}: {spec.summary}"))
        else:
            from gancore.data.points import PointsError, point_dims

            try:
                point_dims(d.path)
            except PointsError as exc:
                problems.append(("data.path", str(exc)))
    elif d.path:
        problems.append(("data.path", f"only used by {' and '.join(FILE_DATASETS)}, not {d.name}; remove it"))
    if spec.kind == "vector" and d.image_size:
        problems.append(("data.image_size", f"{d.name} is vector data; remove image_size"))
    if params.evaluate.classifier != "domain" and params.data_kind == "vector":
        problems.append(("evaluate.classifier", f"{params.evaluate.classifier} needs images; {d.name} is vector data: use domain"))
    if params.n_samples < params.evaluate.splits:
        problems.append(
            (
                "sample.n",
                f"{params.n_samples} samples cannot fill evaluate.splits={params.evaluate.splits}; use at least as many samples as splits",
            )
        )
    if params.probe.enabled and params.mixture.enabled:
        # refused by the probe itself only after the whole pipeline had trained and scored
        problems.append(
            ("probe.enabled", "the probe needs one discriminator, and a mixture trains one per part: set mixture.enabled=false")
        )
    if params.train.devices > 1 and params.mixture.enabled:
        # torchrun's `gan train` trained one GAN on the whole data in the run's folder, not the part
        problems.append(
            (
                "train.devices",
                f"{params.train.devices} processes train one GAN (DistributedDataParallel), and a mixture trains one per part: "
                "set mixture.enabled=false (an image set's mixture is one part anyway), or train.devices=1",
            )
        )
    ev = params.evaluate
    k = max(ev.pr_k, ev.dc_k)
    if params.n_samples <= k:
        problems.append(
            ("sample.n", f"{params.n_samples} samples are too few for {k} nearest neighbours (evaluate.pr_k / dc_k): draw more than {k}")
        )
    if ev.max_real is not None and ev.max_real <= max(k, ev.splits - 1):
        problems.append(
            (
                "evaluate.max_real",
                f"{ev.max_real} real examples are too few for {k} nearest neighbours and {ev.splits} splits: use more than {max(k, ev.splits - 1)}",
            )
        )
    t = params.train
    if t.monitor_every is None:
        if t.keep_best is not None:
            problems.append(("train.keep_best", "needs the collapse monitor: set train.monitor_every (e.g. 500) or keep_best=null"))
        if t.on_collapse != "continue":
            problems.append(
                (
                    "train.on_collapse",
                    f"{t.on_collapse} needs the collapse monitor: set train.monitor_every (e.g. 500) or on_collapse=continue",
                )
            )
    else:
        steps, key = monitored_steps(params)
        if t.monitor_every > steps:
            for name, on in (("train.keep_best", t.keep_best is not None), ("train.on_collapse", t.on_collapse != "continue")):
                if on:
                    problems.append(
                        (
                            name,
                            f"needs the collapse monitor, which checks every {t.monitor_every} steps of {key}={steps}: lower train.monitor_every",
                        )
                    )
    if params.sample.generator == "best" and t.keep_best is None:
        problems.append(("sample.generator", "best needs train.keep_best (e.g. high_quality_fraction); or use sample.generator=last"))
    if params.mixture.enabled and params.mixture.partition == "labels" and params.data_kind == "vector":
        problems.append(("mixture.partition", f"{d.name} is unlabelled vector data: use kmeans (or auto)"))
    if params.mixture.enabled and params.mixture.partition == "labels" and params.mixture.parts != "auto":
        problems.append(
            (
                "mixture.parts",
                f"{params.mixture.parts}: labels make one part per class; use parts: auto, or partition: kmeans for a count of your own",
            )
        )
    problems += augment_problems(params)
    m = params.mixture
    if m.parts != "auto" and int(m.parts) > m.max_parts:
        problems.append(("mixture.parts", f"{m.parts} is more than mixture.max_parts={m.max_parts}; raise max_parts or use fewer parts"))
    if check_plugins:
        from gancore.losses import penalty_problem
        from gancore.registry import architectures, build_problem, discriminator_batch_normalised, resolve_options

        archs = architectures()
        reg = archs.get(params.model.arch)
        if reg is None:
            problems.append(("model.arch", f"{params.model.arch!r} is not an installed architecture; allowed: {', '.join(sorted(archs))}"))
        else:
            arch = reg.architecture
            # A 0 in the shape is a data problem reported above (no image_size, an unreadable file).
            if 0 not in params.data_shape and not arch.supports(params.data_shape):
                supported = ", ".join(str(s) for s in arch.shapes) or ", ".join(sorted(arch.kinds))
                problems.append(
                    ("model.arch", f"{arch.name} does not support data shape {params.data_shape} of {d.name}; it supports: {supported}")
                )
            try:
                resolved = resolve_options(arch, params.model.options)
            except ValueError as exc:
                problems.append(("model.options", str(exc)))
            else:
                # values the plugin refuses (init: foo), and a broken plugin, are refused here, not after prepare ran
                buildable = 0 not in params.data_shape and arch.supports(params.data_shape)
                if buildable and (refused := build_problem(arch, params.data_shape, params.model.latent_dim, resolved)):
                    problems.append(refused)
                elif buildable:
                    normed = discriminator_batch_normalised(arch, params.data_shape, params.model.latent_dim, resolved)
                    if penalised := penalty_problem(params.loss.name, arch.name, normed, resolved):
                        problems.append(("loss.name", penalised))
    return problems
