"""The code each stage runs, derived from its imports: what ``dvc.yaml`` lists as a stage's code
dependencies and what keys the Prefect cache of data preparation.

A stage's code is the first-party import closure of the modules its function in
:mod:`gancore.stages` imports, found by reading the source (every ``import`` statement, also the
ones inside functions, which load lazily but run all the same), plus the architecture plugins for
the stages that build networks (loaded through entry points, which no import statement shows).
:data:`PLUMBING` is left out: modules that move files and names around but compute nothing a
stage's outputs depend on, so that editing a help text or a path does not rerun training.

``python -m gancore.codedeps`` prints each stage's list in ``dvc.yaml``'s form; a test keeps
``dvc.yaml`` and the cache key equal to it.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
# What each stage's function in gancore.stages imports.
ENTRY: dict[str, tuple[str, ...]] = {
    "prepare": ("gancore.data.prepare",),
    "train": ("gancore.mixture", "gancore.training"),
    "sample": ("gancore.sampling",),
    "evaluate": ("gancore.evaluation",),
    "diagnose": ("gancore.diagnostics",),
    "probe": ("gancore.probe",),
}
# Stages that build networks from the architecture plugins (entry points, not imports).
BUILDS_NETWORKS = ("train", "sample", "probe")
PLUGINS = "plugins"
# Modules that compute nothing an output depends on: error types, file plumbing, paths, names,
# progress output, the command line, trackers (a side channel), fault injection for tests.
PLUMBING = frozenset(
    {
        "gancore/__init__.py",
        "gancore/cli.py",
        "gancore/environment.py",
        "gancore/errors.py",
        "gancore/faults.py",
        "gancore/hookspecs.py",
        "gancore/io.py",
        "gancore/layout.py",
        "gancore/names.py",
        "gancore/progress.py",
        "gancore/recorder.py",
        "gancore/codedeps.py",
    }
)
PLUMBING_DIRS = ("gancore/tracking/",)


def _module_file(name: str) -> Path | None:
    if not name.startswith("gancore"):
        return None
    parts = name.split(".")
    base = PACKAGE.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _package_of(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def imports_of(path: Path) -> frozenset[Path]:
    """The first-party modules ``path`` imports (anywhere in it), with the packages they run."""
    tree = ast.parse(path.read_text(), str(path))
    here = _package_of(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    files: set[Path] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            found = _module_file(".".join(parts[:i]))
            if found is not None:
                files.add(found)
    return frozenset(files)


def closure(modules: tuple[str, ...]) -> set[Path]:
    """Every first-party file the modules import, transitively."""
    todo = [f for m in modules if (f := _module_file(m)) is not None]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imports_of(path) - seen)
    return seen


def _is_plumbing(rel: str) -> bool:
    return rel in PLUMBING or rel.startswith(PLUMBING_DIRS)


def stage_files(stage: str) -> list[str]:
    """The repository-relative source files ``stage`` runs, plumbing left out."""
    files = sorted(p.relative_to(REPO).as_posix() for p in closure(ENTRY[stage]))
    return [f for f in files if not _is_plumbing(f)]


def stage_deps(stage: str) -> list[str]:
    """:func:`stage_files` as ``dvc.yaml`` lists them: a folder where the stage runs every module
    in it (and its sub-folders), else the files; the plugins folder for stages that build networks."""
    files = set(stage_files(stage))
    out: set[str] = set()
    for f in sorted(files):
        folder = Path(f).parent
        # The highest folder below gancore/ whose every non-plumbing module the stage runs.
        best = None
        while folder != Path("gancore") and folder != Path("."):
            modules = {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts}
            if modules and {m for m in modules if not _is_plumbing(m)} <= files:
                best = folder
            folder = folder.parent
        out.add(best.as_posix() if best is not None else f)
    out = {d for d in out if not any(d != o and d.startswith(o + "/") for o in out)}
    if stage in BUILDS_NETWORKS:
        out.add(PLUGINS)
    return sorted(out)


def code_digest(stage: str) -> str:
    """A digest of the sources ``stage`` runs (the Prefect cache key of prepare)."""
    import hashlib

    digest = hashlib.sha256()
    paths = [REPO / d for d in stage_deps(stage)]
    for path in sorted(f for p in paths for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p]) if "__pycache__" not in f.parts):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def check_dvc(stages: dict) -> list[str]:
    """Where ``dvc.yaml``'s ``stages`` (its parsed mapping) and the derived code deps differ."""
    problems = []
    for stage in ENTRY:
        listed = {d for d in (stages.get(stage) or {}).get("deps", []) if isinstance(d, str) and d.startswith(("gancore", PLUGINS))}
        derived = set(stage_deps(stage))
        problems += [f"dvc.yaml: stage {stage} misses {d}, which it runs" for d in sorted(derived - listed)]
        problems += [f"dvc.yaml: stage {stage} lists {d}, which it does not run" for d in sorted(listed - derived)]
    return problems


def main() -> int:
    for stage in ENTRY:
        print(f"{stage}:")
        for dep in stage_deps(stage):
            print(f"  - {dep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
