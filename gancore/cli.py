"""The ``gan`` command: one sub-command per stage, plus plugin tools.

Exit codes: 0 success, 1 a failure with a message (missing data, non-finite loss, ...),
2 invalid parameters or usage (nothing is written).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from gancore.stages import STAGE_ORDER

STAGE_HELP = {
    "prepare": "fetch raw data and write data/prepared/ (tensors, meta.json, domain classifier)",
    "train": "train the GAN; resumes from checkpoints/ when the parameters match",
    "sample": "draw samples with a fixed seed into samples/, plus a picture",
    "evaluate": "score the samples: Inception Score, KL/JS, FID, precision/recall, density/coverage",
    "diagnose": "mode collapse and training-dynamics diagnosis with a verdict",
}


def _add_params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", metavar="FILE", help="parameter file (default: params.yaml)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override one parameter, e.g. -S train.steps=500 (repeatable)")
    p.add_argument("--out", default=".", metavar="DIR", help="output root for data/, models/, samples/, metrics/ (default: .)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan", description="Reproducible GAN experiments: prepare -> train -> sample -> evaluate -> diagnose.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGE_ORDER:
        p = sub.add_parser(stage, help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        _add_params_args(p)
        if stage == "train":
            p.add_argument("--restart", action="store_true", help="ignore existing checkpoints and start over")
    plugins = sub.add_parser("plugins", help="list architecture plugins or check one")
    psub = plugins.add_subparsers(dest="plugins_command", required=True, metavar="ACTION")
    psub.add_parser("list", help="show every architecture, where it came from, its kinds and options")
    check = psub.add_parser("check", help="run the conformance check a plugin author runs on their architecture")
    check.add_argument("name", help="architecture name")
    check.add_argument("--device", default="cpu", help="device to check on (default: cpu)")
    return parser


def _print_summary(title: str, summary: dict[str, Any]) -> None:
    print(f"{title}:")
    width = max((len(k) for k in summary), default=0)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"  {key:<{width}}  {value}")


def _run_stage(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gancore.config import load_params
    from gancore.layout import Layout
    from gancore.tracking import run_stage

    params = load_params(args.params, args.overrides)
    kwargs = {"restart": args.restart} if args.command == "train" else {}
    # With tracking enabled the stage joins the pipeline's MLflow run (found through
    # <out>/.mlflow_run.json); mlflow.db lives beside the parameter file.
    summary = run_stage(args.command, params, Layout(args.out), root=Path(args.params).resolve().parent, **kwargs)
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
        return 0
    from gancore.conformance import check_architecture

    report = check_architecture(args.name, device=args.device)
    print(report.render())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gancore.config import ParamsError
    from gancore.errors import GanCoreError

    try:
        if args.command == "plugins":
            return _plugins(args)
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
