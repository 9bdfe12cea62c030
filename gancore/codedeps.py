"""The code each stage runs, derived from its imports: what ``dvc.yaml`` lists as a stage's code
dependencies and what keys the Prefect cache of data preparation.

A stage's code is the first-party import closure of the modules its function in
:mod:`gancore.stages` imports, found by reading the source (every ``import`` statement, also the
ones inside functions, which load lazily but run all the same), plus the architecture plugins for
the stages that build networks (loaded through entry points, which no import statement shows).
:data:`PLUMBING` is left out: modules that move files and names around but compute nothing a
stage's outputs depend on, so that editing a help text or a path does not rerun training.

``python -m gancore.codedeps`` prints each stage's list in ``dvc.yaml``'s form (``--write`` puts
them into ``dvc.yaml``); a test keeps ``dvc.yaml`` and the cache key equal to it.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path
from typing import Any

from gancore.classifier_choices import loader_modules
from gancore.datasets import builder_modules
from gancore.figures import compute_modules
from gancore.losses import objective_modules

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
# What each stage's function in gancore.stages imports; prepare, train and evaluate also import,
# by name, the data sets' builders, the losses' objectives, the metrics' functions and the
# classifiers' loaders ("module:function" in gancore.datasets, gancore.losses, gancore.figures and
# gancore.classifier_choices), which no import statement shows.
ENTRY: dict[str, tuple[str, ...]] = {
    "prepare": ("gancore.data.prepare", *builder_modules()),
    "train": ("gancore.mixture", "gancore.training", *objective_modules()),
    "sample": ("gancore.sampling",),
    "evaluate": ("gancore.evaluation", *compute_modules(), *loader_modules()),
    "diagnose": ("gancore.diagnostics",),
    "probe": ("gancore.probe",),
}
# The architecture plugins load through entry points, which no import statement shows: a stage
# whose code can build networks (it runs gancore/modelio.py) depends on them.
BUILDS_NETWORKS = "gancore/modelio.py"
PLUGINS = "plugins"
# Modules that compute nothing an output depends on: error types, file plumbing, paths, names,
# the registries' module:function references, progress output, the command line, trackers (a side channel), fault injection for tests.
PLUMBING = frozenset(
    {
        "gancore/__init__.py",
        "gancore/cli.py",
        "gancore/environment.py",
        "gancore/errors.py",
        "gancore/failpoints.py",
        "gancore/hookspecs.py",
        "gancore/io.py",
        "gancore/layout.py",
        "gancore/lazy.py",
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


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _under_type_checking(tree: ast.AST) -> set[int]:
    """The nodes inside ``if TYPE_CHECKING:`` blocks (imports for annotations only, never run)."""
    return {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and _type_checking(block)
        for stmt in block.body
        for n in ast.walk(stmt)
    }


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import that runs (anywhere in the file, also inside functions;
    not those under ``if TYPE_CHECKING:``), relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = _package_of(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    skipped = _under_type_checking(tree)
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, [alias.name for alias in node.names]))
    return out


@cache
def imports_of(path: Path) -> frozenset[Path]:
    """The first-party modules ``path`` runs through its imports: each named module, and the
    packages on the way (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    files: set[Path] = set()
    for module, names in _imports(path):
        for name in [module, *(f"{module}.{n}" for n in names)]:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:i]))
                if found is not None:
                    files.add(found)
    return frozenset(files)


@cache
def module_edges(path: Path) -> frozenset[Path]:
    """The modules ``path`` imports by name, the graph whose cycles matter: ``from a.b import c``
    is an edge to the module ``a.b.c`` when there is one, else to ``a.b``. The packages run on the
    way are not edges (a package's ``__init__`` re-exporting its submodules is no cycle)."""
    files: set[Path] = set()
    for module, names in _imports(path):
        targets = [f"{module}.{n}" if _module_file(f"{module}.{n}") is not None else module for n in names] or [module]
        files.update(f for t in targets if (f := _module_file(t)) is not None)
    files.discard(path)
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
    if BUILDS_NETWORKS in files:
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


# The layers, lowest first: a module may import its own layer and the ones below, never above.
# (The stages know nothing of trackers, the core nothing of the orchestrators.)
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "errors",
        "lazy",
        "datasets",
        "classifier_choices",
        "figures",
        "losses",
        "objectives",
        "names",
        "seeds",
        "io",
        "layout",
        "environment",
        "progress",
        "failpoints",
        "hookspecs",
    ),
    (
        "clustering",
        "gaussian_mixture",
        "gmm_fit",
        "background",
        "cluster_selection",
        "cluster_growth",
        "lattice",
        "mode_merging",
        "data/prepared",
        "data/points",
    ),  # what config validates and every later stage reads
    (
        "config",
        "params_tree",
        "config_checks",
        "device",
        "registry",
        "trainlog",
        "pictures",
        "metrics",
        "report",
        "ranking",
        "provenance",
        "heldout",
    ),
    ("data", "checkpoint", "modelio", "conformance", "conformance_checks", "classifiers", "partition", "part_space", "dvcstore"),
    ("diagnostics", "training", "mixture", "sampling", "evaluation", "evaluation_jsd", "probe"),
    ("recorder", "stages", "tracking", "codedeps", "catalogue"),
    ("cli", "__init__"),
)
# Third-party orchestrators the core may import only inside functions (or in these modules).
ORCHESTRATORS = ("prefect", "mlflow", "dvc")
ORCHESTRATOR_HOMES = ("gancore/tracking/", "gancore/dvcstore.py")


def _layer(path: Path) -> int:
    """The layer of a module: its longest matching entry in :data:`LAYERS` (``data/prepared``
    sits below ``data``); -1 when it has none."""
    rel = path.relative_to(PACKAGE).with_suffix("").as_posix()
    matches = [(len(name), i) for i, names in enumerate(LAYERS) for name in names if rel == name or rel.startswith(name + "/")]
    return max(matches)[1] if matches else -1


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def import_cycles(edges: Any = None) -> list[list[str]]:
    """Groups of first-party modules that import each other (directly or around a loop), counting
    imports inside functions too: a cycle hidden behind a local import is still a cycle."""
    edges = edges or module_edges
    graph = {f: set(edges(f)) for f in package_modules()}
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on: set[Path] = set()
    cycles: list[list[str]] = []

    def strong(v: Path) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(p.relative_to(REPO).as_posix() for p in group))

    for v in graph:
        if v not in index:
            strong(v)
    return cycles


def layer_violations(edges: Any = None) -> list[str]:
    """Imports of a higher layer (:data:`LAYERS`), of the flows from the core, and module-level
    imports of an orchestrator outside its homes."""
    edges = edges or module_edges
    problems = []
    for path in package_modules():
        rel = path.relative_to(REPO).as_posix()
        mine = _layer(path)
        if mine < 0:
            problems.append(f"{rel} is in no layer of gancore.codedeps.LAYERS: add it")
            continue
        for target in sorted(edges(path)):
            theirs = _layer(target)
            if theirs > mine:
                problems.append(f"{rel} (layer {mine}) imports {target.relative_to(REPO).as_posix()} (layer {theirs}, above it)")
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:  # module level only: imports inside functions load lazily
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top == "gancore_flows":
                    problems.append(f"{rel} imports {name}: the core never imports the flows")
                if top in ORCHESTRATORS and not rel.startswith(ORCHESTRATOR_HOMES):
                    problems.append(f"{rel} imports {name} at module level: only {', '.join(ORCHESTRATOR_HOMES)} may")
    return problems


def check_dvc(stages: dict) -> list[str]:
    """Where ``dvc.yaml``'s ``stages`` (its parsed mapping) and the derived code deps differ."""
    problems = []
    for stage in ENTRY:
        listed = {d for d in (stages.get(stage) or {}).get("deps", []) if isinstance(d, str) and d.startswith(("gancore", PLUGINS))}
        derived = set(stage_deps(stage))
        problems += [f"dvc.yaml: stage {stage} misses {d}, which it runs" for d in sorted(derived - listed)]
        problems += [f"dvc.yaml: stage {stage} lists {d}, which it does not run" for d in sorted(listed - derived)]
    return problems


def rewrite_dvc(text: str) -> str:
    """``dvc.yaml``'s text with each stage's code deps replaced by the derived ones (its other
    deps, comments and everything else kept as they are)."""
    lines, out, stage, in_deps = text.split("\n"), [], None, False
    for line in lines:
        name = line.strip()[:-1]
        if line.startswith("  ") and not line.startswith("    ") and line.strip().endswith(":") and name in ENTRY:
            stage = name
        if stage and line.startswith("    deps:"):
            in_deps = True
            out.append(line)
            continue
        if in_deps:
            if line.startswith("      - ") or line.startswith("      #"):
                if not line.strip()[2:].startswith(("gancore", PLUGINS)):
                    out.append(line)
                continue
            assert stage is not None
            out += [f"      - {dep}" for dep in stage_deps(stage)]
            in_deps = False
        out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print each stage's code deps; ``--write`` puts them into the repository's dvc.yaml."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        path = REPO / "dvc.yaml"
        path.write_text(rewrite_dvc(path.read_text()))
        print(f"wrote the derived code deps into {path}")
        return 0
    for stage in ENTRY:
        print(f"{stage}:")
        for dep in stage_deps(stage):
            print(f"  - {dep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
