"""The registries as tables people read: ``gan datasets``, ``gan metrics``, ``gan losses``, ``gan
classifiers`` and the README's tables between ``<!-- catalogue:NAME -->`` and ``<!-- /catalogue:NAME -->``.

Nothing here is typed twice: each row is read from its registry (:mod:`gancore.datasets`,
:mod:`gancore.figures`, :mod:`gancore.losses`, :mod:`gancore.classifier_choices`). ``python -m gancore.catalogue --write`` puts the
tables into the README; a test fails while they differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gancore.report import markdown_table, text_table

README = Path(__file__).resolve().parent.parent / "README.md"
Table = tuple[list[str], list[list[str]]]


def datasets_table() -> Table:
    from gancore.datasets import REGISTRY

    rows = []
    for spec in REGISTRY.values():
        if spec.shape is not None:
            shape = "x".join(map(str, spec.shape))
        else:
            shape = f"{spec.channels}x`image_size`^2" if spec.kind == "image" else "the file's columns"
        modes = str(spec.modes) if spec.modes is not None else ("subfolders" if spec.kind == "image" else "found (GMM, BIC)")
        source = {"generated": "generated", "torchvision": f"torchvision `{spec.torchvision}`", "files": "`data.path`"}[spec.fetch]
        rows.append([f"`{spec.name}`", spec.kind, shape, modes, f"{spec.samples:,}", source, spec.summary])
    return ["data.name", "kind", "shape", "modes", "samples (protocol)", "from", "what"], rows


def metrics_table() -> Table:
    from gancore.figures import METRICS

    rows = []
    for metric in METRICS.values():
        figures = ", ".join(f"`{f.key}` ({f.better})" + ("" if f.summary else "*") for f in metric.figures)
        rows.append([metric.name, metric.needs, figures, metric.summary])
    return ["metric", "needs", "figures (better; * not in the flows' and MLflow's headline table)", "what"], rows


def losses_table() -> Table:
    from gancore.losses import REGISTRY

    def yes(flag: bool) -> str:
        return "yes" if flag else "-"

    def at(boundary: float | None) -> str:
        return "none: fixed augmentation only" if boundary is None else f"{boundary:g}"

    rows = [[f"`{s.name}`", yes(s.sigmoid), yes(s.saturating), yes(s.penalty), at(s.boundary)] for s in REGISTRY.values()]
    return ["loss.name", "sigmoid D", "saturating G", "gradient penalty", "D's boundary (r_t)"], rows


def classifiers_table() -> Table:
    from gancore.classifier_choices import REGISTRY

    rows = [[f"`{s.name}`", s.summary, s.comparable] for s in REGISTRY.values()]
    return ["evaluate.classifier", "what", "beside published numbers"], rows


TABLES = {"datasets": datasets_table, "metrics": metrics_table, "losses": losses_table, "classifiers": classifiers_table}


def render_readme(text: str) -> str:
    """``text`` with each catalogue table between its markers rewritten from its registry."""
    for name, table in TABLES.items():
        pattern = re.compile(rf"(<!-- catalogue:{name} -->\n).*?(<!-- /catalogue:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- catalogue:{name} --> ... <!-- /catalogue:{name} --> block")
        body = markdown_table(*table()) + "\n"
        text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)  # noqa: B023 (used at once)
    return text


def show(name: str) -> int:
    """Print one registry as a terminal table (``gan datasets`` and friends)."""
    headers, rows = TABLES[name]()
    print(text_table(headers, [[cell.replace("`", "") for cell in row] for row in rows]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = README.read_text()
    new = render_readme(text)
    if args == ["--write"]:
        README.write_text(new)
        print(f"wrote the catalogue tables into {README}")
        return 0
    print("README tables are current" if new == text else "README tables differ: run python -m gancore.catalogue --write")
    return 0 if new == text else 1


if __name__ == "__main__":
    sys.exit(main())
