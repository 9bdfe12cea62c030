"""Training on little data, with and without the augmentation the discriminator sees (the design
notes' "train on more diverse data"): MNIST and Fashion-MNIST at 1 %, 10 % and 100 % of the
training set, one DCGAN each (the mnist-dcgan example's network and rates, no mixture), with

* ``none``: no augmentation;
* ``fixed``: DiffAugment's ``color,translation,cutout`` (or the transforms ``-S augment.policy``
  names) on every sample;
* ``adaptive``: the same transforms with ADA's adaptive probability (``augment.adaptive``), steered
  by r_t;
* ``held_out``: the same, steered by D's calls on training against held-out examples
  (``augment.signal: held_out``): p rises only while D memorises.

Every configuration trains the same number of steps on the same seeds. FID and IS are taken in the
domain classifier's space, one classifier per data set trained on the full training set (so that
the yardstick does not shrink with the data), against the full test split. The table gives mean
+- s.e. over seeds: FID, IS, modes, high quality, the discriminator's overfitting figures (its
"real" calls on training against held-out data, r_t; flagged runs) and CPU-minutes, with the
published DiffAugment / ADA figures beside them as anchors (other data and networks: the direction
of the effect is comparable, not the numbers).

    python benchmarks/data_limited.py                         # 3 seeds, 1,000 steps a run
    python benchmarks/data_limited.py --data mnist --fraction 0.1 --seeds 3 --steps 2000
    python benchmarks/data_limited.py --data mnist --fraction 0.1 --seeds 3 --first-seed 3 --steps 20000  # seeds 3-5
    python benchmarks/data_limited.py --fraction 0.1 --policy adaptive -S augment.kimg=100 --out fast  # a faster pace than ADA's
    python benchmarks/data_limited.py --fraction 0.1 -S augment.policy=color,translation,cutout,geometric --out geom
    python benchmarks/data_limited.py --tiny                  # CI smoke size: numbers meaningless
    python benchmarks/data_limited.py --device cuda --workers 12 --fraction 0.1 --steps 50000  # GPU-length

``--steps 20000,40000,60000`` carries the runs on from one length to the next (each a continuation
of the last, so the longer runs cost only their new steps) and prints a table at each: FID against
training length in one invocation. With ``--out``, runs finished there by an earlier invocation continue from their checkpoints to
``--steps`` (a resume is exact, so this equals a run trained that long from the start) and their
cost column counts every invocation's time. Runs with other ``-S`` settings need another ``--out``:
the benchmark refuses to continue a run under settings it was not trained with, naming both.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_limited_report import anchors_text, line, table  # noqa: E402
from runs import (  # noqa: E402
    NO_CLASSIFIER,
    add_run_arguments,
    check_device,
    cost_unit,
    gather,
    install_classifier,
    next_length,
    pool,
    rising_lengths,
    run_stages,
    share_raw,
)

REPO = Path(__file__).resolve().parents[1]
DATA = ("mnist", "fashion_mnist")
TRAIN_SIZE = 60_000
TINY_SIZE = 2_000
FRACTIONS = (0.01, 0.1, 1.0)
POLICY = "color,translation,cutout"
SETTINGS = {
    "none": [],
    "fixed": [f"augment.policy={POLICY}"],
    "adaptive": [f"augment.policy={POLICY}", "augment.adaptive=true"],
    "held_out": [f"augment.policy={POLICY}", "augment.adaptive=true", "augment.signal=held_out"],
}
COMMON = [
    "model.arch=dcgan",
    "model.latent_dim=64",
    "model.options.width=32",
    "mixture.enabled=false",
    "train.monitor_every=null",
    "train.checkpoint_every=100000",
    "sample.n=5000",
]
# What a run's record depends on: -S may not change these (the options do), nor the augment.*
# settings that make a policy what it is, which --policy sets. -S augment.policy chooses the
# transforms of the augmented policies (the none runs take none), and the adaptive rule's pace and
# target (augment.kimg, .target, .interval, .jitter) may be set: they change how a policy runs,
# not which one it is.
OWN_SETTINGS = ("seed", "device", "train.steps", "data.name", "data.n_train")
TRANSFORMS = "augment.policy"


def _key(setting: str) -> str:
    return setting.split("=", 1)[0].strip()


POLICY_SETTINGS = tuple(k for k in dict.fromkeys(_key(s) for sets in SETTINGS.values() for s in sets) if k != TRANSFORMS)
# In each run's folder: the cost so far and the steps it reached, for a later, longer invocation.
SPENT = "benchmark_run.json"
# What a run continued from a record written before runs named their install trained on at first.
UNRECORDED = "an install not recorded (before commit 48b3fa0)"
# Beside the reference: the settings it was prepared with, and their digest.
REFERENCE_SETTINGS = "reference_settings.json"
TINY = ["data.n_test=300", "model.options.width=4", "sample.n=300", "evaluate.max_real=300", "diagnose.ndb_bins=10"]


def _params(data: str, fraction: float, policy: str, seed: int, steps: int, sets: list[str], size: int) -> Any:
    """``size``: the training set the fractions are of (60,000; less with --tiny)."""
    from gancore.config import load_params

    n = max(64, round(fraction * size))
    overrides = [f"seed={seed}", "device=cpu", "tracking.enabled=false", f"data.name={data}", *COMMON, f"train.steps={steps}"]
    overrides += ["data.n_train=null" if n >= TRAIN_SIZE else f"data.n_train={n}", *SETTINGS[policy], *_for_policy(sets, policy)]
    return load_params(REPO / "params.yaml", overrides)


def _reference_params(data: str, sets: list[str], size: int) -> Any:
    """The reference's parameters; ``.digest("data", "device")`` of them names a yardstick."""
    return _params(data, 1.0, "none", 0, 1, sets, size)


def reference(data: str, root: str, sets: list[str], size: int) -> float:
    """The data set prepared whole, once: its domain classifier is every run's yardstick."""
    from gancore.io import read_json, write_json
    from gancore.layout import Layout

    params = _reference_params(data, sets, size)
    layout = Layout(Path(root) / data / "reference")
    # An earlier invocation's, in --out, serves if it was prepared with the same settings (a --tiny
    # reference must not become a full run's yardstick); written last, so a stopped one is redone.
    made_with = layout.root / REFERENCE_SETTINGS
    settings = {"digest": params.digest("data", "device"), "data": params.data.model_dump(mode="json"), "device": params.device}
    if layout.classifier.exists() and made_with.exists() and read_json(made_with)["digest"] == settings["digest"]:
        return 0.0
    made_with.unlink(missing_ok=True)
    seconds = run_stages(params, layout, ("prepare",))
    write_json(made_with, settings)
    return seconds


def run_one(
    data: str, fraction: float, policy: str, seed: int, steps: int, sets: list[str], size: int, root: str, scoring: str | None = None
) -> dict[str, Any]:
    """One run trained to ``steps`` (continued if --out holds it shorter), then sampled, scored
    and diagnosed, on ``scoring``'s device if given (else where it trained)."""
    from gancore import trainlog
    from gancore.device import software
    from gancore.io import read_json, write_json
    from gancore.layout import Layout

    layout = Layout(Path(root) / data / f"{fraction:g}-{policy}-{seed}")
    spent = layout.root / SPENT
    ref = Layout(Path(root) / data / "reference")
    yardstick = read_json(ref.root / REFERENCE_SETTINGS)["digest"]
    continued_from = None
    earlier = read_json(spent) if spent.exists() and layout.checkpoint.exists() else None
    if earlier is not None and earlier.get("reference") == yardstick:
        # A run an earlier invocation trained in --out, against this reference: training resumes
        # from its checkpoint (train.steps does not change a run's identity), so a longer run costs
        # only the new steps; one trained further than asked (its scoring failed) is scored as is.
        cpu_s, continued_from = float(earlier["cost_s"]), int(earlier["steps"])
        trained_with = list(earlier.get("software", [UNRECORDED]))
        steps = max(steps, continued_from)
    # Without a classifier of its own (the reference's is installed), as it was prepared: the
    # stages after prepare check it (gancore.data.settings).
    params = _params(data, fraction, policy, seed, steps, [*sets, NO_CLASSIFIER], size)
    if continued_from is None:
        # A run stopped mid-way (its cost unknown), or scored by another reference: start over.
        layout.checkpoint.unlink(missing_ok=True)
        trained_with = []
        share_raw(ref, layout)
        cpu_s = run_stages(params, layout, ("prepare",))
        install_classifier(ref, layout)
    started = time.perf_counter()
    cpu_s += run_stages(params, layout, ("train",))
    # Recorded before scoring: a later invocation continues this training even if scoring fails.
    # Every install that trained part of the run: a rerun is bit for bit the same only on those.
    here = software(params.device)
    if (continued_from is None or steps > continued_from) and here not in trained_with:
        trained_with.append(here)
    record = {"steps": steps, "reference": yardstick, "software": trained_with, "settings": _defining(sets, policy)}
    write_json(spent, {"cost_s": cpu_s, **record})
    trained = time.perf_counter()
    scored = params if scoring is None else params.model_copy(update={"device": scoring})
    cpu_s += run_stages(scored, layout, ("sample", "evaluate", "diagnose"), billed_as=params.device)
    write_json(spent, {"cost_s": cpu_s, **record})
    wall = {"train_wall_s": trained - started, "score_wall_s": time.perf_counter() - trained, "scored_on": scored.device}
    log = trainlog.read(layout.train_log)
    # The pace over the later half of this invocation's steps: past compilation and warm-up.
    clock = [(r["step"], r["seconds"]) for r in log if r["step"] >= ((continued_from or 0) + steps) / 2]
    if len(clock) > 1 and clock[-1][0] > clock[0][0]:
        wall["pace_s"] = (clock[-1][1] - clock[0][1]) / (clock[-1][0] - clock[0][0])
    evaluation, diagnosis = read_json(layout.evaluate_json), read_json(layout.diagnose_json)
    last = log[-1]
    memo = (diagnosis.get("dynamics") or {}).get("discriminator_overfitting") or {}
    return {
        "data": data,
        "fraction": fraction,
        "policy": policy,
        "seed": seed,
        "n_train": params.data.n_train,
        "cpu_min": cpu_s / 60,
        "steps": steps,
        "continued_from": continued_from,
        "fid": evaluation["fid"],
        "is_mean": evaluation["is_mean"],
        "modes_covered": diagnosis["modes_covered"],
        "high_quality_fraction": diagnosis["high_quality_fraction"],
        "d_gap": memo.get("gap"),
        "d_auc": memo.get("auc"),
        "r_t_train": memo.get("r_t_train"),
        "p_final": last.get("augment_p"),
        "overfitting": bool(memo.get("flag")),
        "overfitting_by": memo.get("flagged_by"),  # the share gap, or the AUC alone
        "verdict": diagnosis["verdict"],
        "remedies": [r["name"] for r in diagnosis.get("remedy_settings") or []],
        "software": trained_with,
        **wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="\n\n".join(__doc__.split("\n\n")[:2]), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", action="append", choices=DATA, help="data sets (default: both)")
    parser.add_argument("--fraction", action="append", type=float, choices=FRACTIONS, help="training shares (default: all)")
    parser.add_argument("--policy", action="append", choices=list(SETTINGS), help="augmentations (default: all)")
    parser.add_argument("--seeds", type=int, help="seeds per configuration (default 3; --tiny: 1)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="K",
        help="the seeds are K, K+1, ... (default 0): more seeds for a table whose first ones ran elsewhere",
    )
    parser.add_argument(
        "--steps",
        type=rising_lengths,
        help="generator steps of every run (default 1000; --tiny: 4), or rising lengths, e.g. 20000,40000: the runs are "
        "continued from one to the next, with a table at each; runs an earlier invocation finished in --out continue too",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--until",
        type=float,
        metavar="SECONDS",
        help="after the --steps lengths, continue the runs once more, to the longest length (in thousands) that the last "
        "round's pace says is trained and scored within SECONDS of the start (a lease on a borrowed GPU, say)",
    )
    parser.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="a parameter for every run, as gan train -S takes it"
    )
    parser.add_argument(
        "--score-on", choices=("cpu", "cuda"), help="sample, score and diagnose there (default: where the runs train, --device)"
    )
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (1 if args.tiny else 3)
    if seeds < 1 or args.first_seed < 0:
        parser.error(f"--seeds {seeds} --first-seed {args.first_seed}: give at least one seed, the first of them 0 or more")
    lengths = args.steps or [4 if args.tiny else 1000]
    check_device(parser, args.device)
    if args.score_on:
        check_device(parser, args.score_on)
    unit = cost_unit(args.device)
    sets = [*TINY, "data.classifier_epochs=1"] if args.tiny else []
    keys = [_key(s) for s in args.set]
    ours = [s for s, key in zip(args.set, keys) if key in OWN_SETTINGS]
    if ours:
        parser.error(
            f"-S {ours[0]}: the benchmark sets {', '.join(OWN_SETTINGS)} itself (use --seeds, --steps, --device, --data, --fraction)"
        )
    augmenting = [s for s, key in zip(args.set, keys) if key in POLICY_SETTINGS]
    if augmenting:
        parser.error(
            f"-S {augmenting[0]}: each --policy sets {', '.join(POLICY_SETTINGS)} itself (--policy {', '.join(SETTINGS)}); "
            "-S may set the augmented policies' transforms (augment.policy) and the adaptive rule's augment.kimg, augment.target, "
            "augment.interval and augment.jitter"
        )
    sets += [f"device={args.device}", *args.set]
    transforms = next((s.split("=", 1)[1].strip() for s in reversed(args.set) if _key(s) == TRANSFORMS), POLICY)
    from gancore.errors import GanCoreError, ParamsError

    datasets, fractions, policies = args.data or list(DATA), args.fraction or list(FRACTIONS), args.policy or list(SETTINGS)
    if args.set:
        for policy in policies:  # every run's parameters, before any run: not one failing mid-way
            try:
                _params(DATA[0], 0.1, policy, 0, 1, sets, TRAIN_SIZE)
            except ParamsError as exc:
                parser.error(f"-S with --policy {policy}: {exc}")
    if args.tiny and not args.fraction:
        fractions = [0.01]
    size = TINY_SIZE if args.tiny else TRAIN_SIZE
    plan = list(itertools.product(datasets, fractions, policies, range(args.first_seed, args.first_seed + seeds)))
    if args.out and (clash := _other_settings(Path(args.out), plan, sets, size)):
        parser.error(clash)
    start = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="gancore-data-limited-") as scratch:
            root = str(args.out or scratch)
            with pool(args.workers, args.device) as workers:
                for _ in workers.map(reference, datasets, [root] * len(datasets), [sets] * len(datasets), [size] * len(datasets)):
                    pass
                queue = list(lengths)
                while queue:
                    steps = queue.pop(0)
                    jobs = [workers.submit(run_one, d, f, p, s, steps, sets, size, root, args.score_on) for d, f, p, s in plan]
                    results = gather(jobs, partial(line, unit=unit))
                    text, summary = table(results, itertools.product(DATA, FRACTIONS, SETTINGS), f"{unit}-min/run")
                    steps = max(r["steps"] for r in results)  # more than asked where --out held runs trained further
                    print(f"\nDCGAN, {steps} steps a run, mean +- s.e. over seeds; FID change against no augmentation in brackets")
                    if any(p != "none" for p in policies):
                        print(f"augmented with {transforms}")
                    print("trained with " + "; ".join(sorted({s for r in results for s in r["software"]})) + "\n")
                    print(text + "\n", flush=True)
                    rounds.append({"steps": steps, "runs": results, "summary": summary})
                    if args.json:  # after every length, so that a stopped invocation keeps the lengths it finished
                        from gancore.io import write_json

                        write_json(args.json, {**rounds[-1], "tiny": args.tiny, "transforms": transforms, "rounds": rounds})
                    if not queue and args.until and len(rounds) == len(lengths):
                        longest = next_length(results, args.until - (time.perf_counter() - start))
                        print(
                            f"--until {args.until:g} s: " + (f"continuing to {longest} steps\n" if longest else "no longer length fits\n"),
                            flush=True,
                        )
                        queue += [longest] if longest else []
    except ParamsError as exc:  # what only the data can tell (a held-out split too small for a batch, say)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GanCoreError as exc:  # a run failed: its message, not a worker's traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(anchors_text())
    print(
        f"\n{len(rounds[-1]['runs'])} runs to {rounds[-1]['steps']} steps in {time.perf_counter() - start:.0f} s wall on {args.workers} workers"
    )
    return 0


def _for_policy(sets: list[str], policy: str) -> list[str]:
    """``sets`` as a ``policy`` run takes them: the none runs without augment.* (the augmented runs'
    transforms and pace: augmentation off, they change nothing, and such a run is trained once
    for any of them)."""
    return [s for s in sets if not (policy == "none" and _key(s).startswith("augment."))]


def _defining(sets: list[str], policy: str) -> list[str]:
    """The settings that make a ``policy`` run what it is: all it takes but the device (a run may
    continue on another)."""
    return [s for s in _for_policy(sets, policy) if _key(s) != "device"]


def _other_settings(out: Path, plan: list[tuple[str, float, str, int]], sets: list[str], size: int) -> str:
    """Why a run in ``out`` that this invocation would continue cannot (trained with other -S), or ''."""
    from gancore.io import read_json

    yardsticks = {data: _reference_params(data, sets, size).digest("data", "device") for data, *_ in plan}
    for data, fraction, policy, seed in plan:
        spent = out / data / f"{fraction:g}-{policy}-{seed}" / SPENT
        record = read_json(spent) if spent.exists() else {}
        # Only a run against the reference this invocation keeps is continued; others start over.
        continues = record.get("reference") == yardsticks[data]
        now = _defining(sets, policy)
        then = _defining(record.get("settings", now), policy)  # as this code reads them
        if continues and then != now:
            only_then, only_now = [x for x in then if x not in now], [x for x in now if x not in then]
            return (
                f"--out {out}: {spent.parent.relative_to(out)} was trained with -S {' '.join(only_then) or '(none)'}, "
                f"this invocation gives -S {' '.join(only_now) or '(none)'}: give another --out (a run continues only "
                "with its own settings)"
            )
    return ""


if __name__ == "__main__":
    sys.exit(main())
