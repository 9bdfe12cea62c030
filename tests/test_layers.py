"""No import cycles, none hidden behind imports inside functions; every module in its layer
(gancore.codedeps.LAYERS): the stages know nothing of trackers, the core nothing of the flows."""

from __future__ import annotations

from pathlib import Path

from gancore import codedeps


def test_no_module_imports_one_that_imports_it_back():
    assert codedeps.import_cycles() == []


def test_every_module_imports_only_its_layer_and_below():
    assert codedeps.layer_violations() == []


def _planted(source: str, target: str):
    real = codedeps.module_edges

    def edges(path: Path) -> frozenset[Path]:
        extra = {codedeps.PACKAGE / target} if path == codedeps.PACKAGE / source else set()
        return real(path) | extra

    return edges


def test_a_planted_cycle_is_caught():
    """clustering importing the partition (which imports clustering) closes a loop."""
    cycles = codedeps.import_cycles(_planted("clustering.py", "partition.py"))
    assert len(cycles) == 1 and {"gancore/clustering.py", "gancore/partition.py"} <= set(cycles[0])


def test_a_planted_upward_import_is_caught():
    """NDB (a diagnostic) reaching into the tracker breaks the layers."""
    problems = codedeps.layer_violations(_planted("diagnostics/ndb.py", "tracking/run.py"))
    assert problems == ["gancore/diagnostics/ndb.py (layer 4) imports gancore/tracking/run.py (layer 5, above it)"]
