"""The ``gan`` command: one sub-command per stage, plus plugin tools.

Exit codes: 0 success, 1 a failure with a message (missing data, non-finite loss, ...),
2 invalid parameters or usage (nothing is written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from gancore.names import ALL_STAGES

STAGE_HELP = {
    "prepare": "fetch raw data and write data/prepared/ (tensors, meta.json, domain classifier)",
    "train": "train the GAN; resumes from checkpoints/ when the parameters match",
    "sample": "draw samples with a fixed seed into samples/, plus a picture",
    "evaluate": "score the samples: Inception Score, KL/JS, FID, precision/recall, density/coverage",
    "diagnose": "mode collapse and training-dynamics diagnosis with a verdict",
    "probe": "linear probe of the trained discriminator's features vs raw pixels and a random discriminator (probe.enabled)",
}

# The other registries, listed (the architectures are `gan plugins list`).
CATALOGUE_HELP = {
    "datasets": "list the data sets (data.name): kind, shape, modes, protocol sample count, source",
    "metrics": "list the evaluation's metrics: their figures, which way is better, what they measure",
    "losses": "list the losses (loss.name) and what the diagnosis assumes of each",
    "classifiers": "list the feature spaces (evaluate.classifier) and whether their numbers go beside a paper's",
}


def _add_params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", metavar="FILE", help="parameter file (default: params.yaml)")
    p.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one parameter, e.g. -S train.steps=500 (repeatable)",
    )
    p.add_argument("--out", default=".", metavar="DIR", help="output root for data/, models/, samples/, metrics/ (default: .)")


# The flows' own options, which `gan <stage>` does not take: where they belong instead.
FLOW_OPTIONS = {
    "--repeats": "gan-remedy's (python -m gancore_flows.remedy --repeats N, or make remedy ARGS='--repeats N')",
    "--remedies": "gan-remedy's (python -m gancore_flows.remedy --remedies a,b)",
    "--seed": "gan-sweep's (python -m gancore_flows.sweep --seed 0 --seed 1); one run's seed is -S seed=N",
    "--arch": "gan-sweep's (python -m gancore_flows.sweep --arch mlp --arch dcgan); one run's is -S model.arch=NAME",
    "--loss": "gan-sweep's (python -m gancore_flows.sweep --loss hinge); one run's is -S loss.name=NAME",
    "--workers": "the flows' (gan-sweep, gan-remedy, gan-mixture); gan ui and gan tracking-server take it too",
    "--runner": "the flows' (gan-sweep, gan-remedy, gan-mixture)",
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a hint where a user's options are in the wrong place: ``-S`` before the
    command ("invalid choice: 'train.steps=300'"), or a flow's option given to a stage."""

    def __init__(self, *args: Any, argv: Sequence[str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.argv = list(sys.argv[1:] if argv is None else argv)  # what main() parses

    def error(self, message: str) -> NoReturn:
        argv = self.argv
        hint = ""
        if argv and (argv[0] in ("-S", "--set") or argv[0].startswith("-S")):
            hint = "-S/--set goes after the command, e.g. gan train -S train.steps=300"
        elif "unrecognized arguments" in message:
            flows = [f"{flag} is {FLOW_OPTIONS[flag]}" for flag in FLOW_OPTIONS if any(a == flag or a.startswith(flag + "=") for a in argv)]
            hint = "; ".join(flows) or "gan COMMAND --help lists a command's options"
        super().error(message + (f"\n{self.prog}: hint: {hint}" if hint else ""))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="gan", description="Reproducible GAN experiments: prepare -> train -> sample -> evaluate -> diagnose.", argv=argv)
    # both hints are the top parser's errors (the command, unrecognized arguments): plain subparsers
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser)
    for stage in ALL_STAGES:
        p = sub.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        _add_params_args(p)
        if stage == "train":
            p.add_argument("--restart", action="store_true", help="ignore existing checkpoints and start over")
    ui = sub.add_parser("ui", help="the MLflow UI over this project's runs (http://127.0.0.1:5000)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=port, default=5000)
    ui.add_argument("--root", default=None, help="project folder holding mlflow.db (default: the project around the working directory)")
    ui.add_argument(
        "--workers", type=positive_int, default=1, help="server processes (default 1: one person browsing; mlflow's own default is 4)"
    )
    server = sub.add_parser(
        "tracking-server", help="a shared MLflow tracking server on this project's store; its runs log through it while it runs"
    )
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for other machines)")
    server.add_argument("--port", type=port, default=5000)
    server.add_argument("--root", default=None, help="project folder holding mlflow.db (default: the project around the working directory)")
    server.add_argument("--backend-store-uri", default=None, help="e.g. postgresql://user@host/db (default: the project's mlflow.db)")
    server.add_argument(
        "--artifacts-destination", default=None, help="artifact root the server serves (default: the project's mlartifacts/)"
    )
    server.add_argument("--workers", type=positive_int, default=1)
    for name, what in CATALOGUE_HELP.items():
        sub.add_parser(name, help=what, description=what)
    plugins = sub.add_parser("plugins", help="list architecture plugins or check one")
    psub = plugins.add_subparsers(dest="plugins_command", required=True, metavar="ACTION")
    psub.add_parser("list", help="show every architecture, where it came from, its kinds and options")
    check = psub.add_parser("check", help="run the conformance check a plugin author runs on their architecture")
    check.add_argument("name", help="architecture name")
    check.add_argument("--device", default="cpu", help="device to check on (default: cpu)")
    return parser


def port(text: str) -> int:
    """argparse type of a TCP port (``gan ui``, ``gan tracking-server``, ``make serve``/``worker``)."""
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is no TCP port; use 1-65535")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count (``--workers``, here and in the flows' CLIs): a whole number, 1 or
    more (exit 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _print_summary(title: str, summary: dict[str, Any]) -> None:
    print(f"{title}:")
    width = max((len(k) for k in summary), default=0)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"  {key:<{width}}  {value}")


def _run_stage(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gancore.config import ParamsError, load_params
    from gancore.layout import Layout, find_project_root
    from gancore.recorder import NULL_RECORDER
    from gancore.stages import run_stage
    from gancore.tracking import recorder_for

    params = load_params(args.params, args.overrides)
    out = Path(args.out)
    # before a tracker opens a run the stage could not write beside; nothing is created here (a
    # stage refused later leaves no empty folder behind)
    base = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not base.is_dir():
        why = (
            "is a file; pass the folder the stages write to (created if missing)"
            if base == out.absolute()
            else f"cannot be created: {str(base)!r} is a file; pass a folder you can write to"
        )
        raise ParamsError([("--out", f"{str(out)!r} {why}")], "--out")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ParamsError([("--out", f"{str(out)!r} is not writable ({str(base)!r}); pass a folder you can write to")], "--out")
    kwargs = {"restart": args.restart} if args.command == "train" else {}
    # With tracking enabled the stage joins the pipeline's MLflow run (found through
    # <out>/.mlflow_run.json); mlflow.db lives in the project root (the DVC repository of the params file).
    # Under torchrun every rank runs `gan train`; rank 0 alone records and reports.
    rank0 = os.environ.get("RANK", "0") == "0"
    recorder = recorder_for(params, find_project_root(args.params)) if rank0 else NULL_RECORDER
    summary = run_stage(args.command, params, Layout(args.out), recorder, **kwargs)
    if rank0 and "GANCORE_TRAIN_SUMMARY" not in os.environ:  # launched by train.devices: the launcher reports
        _print_summary(args.command, summary)
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from gancore import registry

    if args.plugins_command == "list":
        archs = registry.architectures()
        if not archs:
            print("no architectures installed")
            return 1
        for name, reg in sorted(archs.items()):
            arch = reg.architecture
            print(f"{name}  [{', '.join(sorted(arch.kinds))}]  from {reg.plugin} ({reg.distribution} {reg.version})")
            if arch.description:
                print(f"    {arch.description}")
            if arch.shapes:
                print(f"    shapes: {', '.join(str(s) for s in arch.shapes)}")
            opts = ", ".join(f"{k}={v!r}" for k, v in arch.defaults.items()) or "(none)"
            print(f"    options: {opts}")
            if arch.legacy:  # what a checkpoint from before these options existed resumes under
                print(f"    checkpoints from before an option resume under: {', '.join(f'{k}={v!r}' for k, v in arch.legacy.items())}")
        return 0
    from gancore.conformance import check_architecture

    archs = registry.architectures()
    if args.name not in archs:
        from gancore.config import ParamsError

        raise ParamsError(
            [("name", f"{args.name!r} is not an installed architecture; installed: {', '.join(sorted(archs))}")], "gan plugins check"
        )
    report = check_architecture(args.name, device=args.device)
    print(report.render())
    return 0 if report.ok else 1


def plain_warnings(prog: str) -> None:
    """The project's own warnings (a skipped plugin, NDB's bins beyond what the samples can show,
    ...) read in one line, ``gan train: warning: ...``, not in Python's warning format (gancore's
    file and line, then the line of source that warned); other packages' keep theirs. ``prog``: the
    command that says it, `gan` or a flow's CLI (the latest call's, in a process calling several).
    Python's ``formatwarning`` is replaced, so that filters and recorders (``pytest.warns``) see
    every warning as before."""
    import warnings
    from pathlib import Path

    _warning_prog[:] = [prog]
    if getattr(warnings.formatwarning, "plain_warnings", False):  # already installed in this process
        return
    formatted = warnings.formatwarning
    ours = str(Path(__file__).resolve().parent)

    def format_(message, category, filename, lineno, line=None):
        if category.__name__ == "PluginWarning" or str(Path(filename).resolve()).startswith(ours):
            return f"{_warning_prog[0]}: warning: {message}\n"
        return formatted(message, category, filename, lineno, line)

    format_.plain_warnings = True  # type: ignore[attr-defined]
    warnings.formatwarning = format_


_warning_prog: list[str] = []


def main(argv: Sequence[str] | None = None) -> int:
    from gancore.environment import quiet

    quiet()
    args = build_parser(argv).parse_args(argv)
    plain_warnings(f"gan {args.command}")
    from gancore.config import ParamsError
    from gancore.errors import GanCoreError

    try:
        if args.command == "plugins":
            return _plugins(args)
        if args.command in CATALOGUE_HELP:
            from gancore.catalogue import show

            return show(args.command)
        if args.command in ("ui", "tracking-server"):
            from pathlib import Path

            from gancore.layout import find_project_root
            from gancore.tracking import server

            # the project around the working directory, as the stages find it (walking up)
            root = Path(args.root).resolve() if args.root is not None else find_project_root()
            if not root.is_dir():
                raise ParamsError([("--root", f"{str(root)!r} is not a folder; pass the project folder holding mlflow.db")], "--root")
            if args.command == "ui":
                return server.ui(root, args.host, args.port, args.workers)
            return server.tracking_server(root, args.host, args.port, args.backend_store_uri, args.artifacts_destination, args.workers)
        return _run_stage(args)
    except ParamsError as exc:
        print(f"gan {args.command}: {exc}", file=sys.stderr)
        return 2
    except GanCoreError as exc:
        print(f"gan {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
