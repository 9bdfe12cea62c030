"""Where each stage reads and writes, relative to one output root (one per run).

Every file name of the pipeline is defined here once; stages, trackers and flows ask a
:class:`Layout` for paths instead of joining names themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# A local mirror of torchvision-layout raw data (e.g. ../shared/datasets); set by the Makefile
# and .ci/run when such a folder exists. Without it, data sets are downloaded.
DATASETS_ENV = "GANCORE_DATASETS_DIR"

DATA_FILE = "data.pt"
META_FILE = "meta.json"
CLASSIFIER_FILE = "classifier.pt"
GENERATOR_FILE = "generator.pt"
DISCRIMINATOR_FILE = "discriminator.pt"
CHECKPOINT_FILE = "last.pt"
HEALTHY_CHECKPOINT_STEM = "healthy_"
SAMPLES_FILE = "samples.pt"
PICTURE_FILE = "samples.png"
TRAIN_LOG_FILE = "train_log.csv"
EVALUATE_FILE = "evaluate.json"
DIAGNOSE_FILE = "diagnose.json"
PROBE_FILE = "probe.json"
DIAGNOSIS_MD = "diagnosis.md"
MODE_CSV = "mode_histogram.csv"
MIXTURE_FILE = "mixture.json"
# The curve the mixture's part count was chosen from (data/prepared/, beside mixture.json).
SELECTION_PICTURE = "parts_selection.png"
# The MLflow run a file-handed pipeline (one process per stage) is logging into.
RUN_FILE = ".mlflow_run.json"


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- folders --
    @property
    def raw(self) -> Path:
        """Raw inputs (downloaded or copied from the mirror); versioned by DVC."""
        return self.root / "data" / "raw"

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def best_models(self) -> Path:
        """The generator at its best monitored value (``train.keep_best``)."""
        return self.models / "best"

    @property
    def checkpoints(self) -> Path:
        """Training state for resuming; deliberately outside ``models/`` (a DVC output)."""
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def progress(self) -> Path:
        """Pictures of the fixed-z samples at every monitor step."""
        return self.plots / "progress"

    # -- files --
    @property
    def prepared_data(self) -> Path:
        return self.prepared / DATA_FILE

    @property
    def prepared_meta(self) -> Path:
        return self.prepared / META_FILE

    @property
    def classifier(self) -> Path:
        return self.prepared / CLASSIFIER_FILE

    @property
    def generator(self) -> Path:
        return self.models / GENERATOR_FILE

    @property
    def discriminator(self) -> Path:
        return self.models / DISCRIMINATOR_FILE

    @property
    def mixture(self) -> Path:
        """The manifest of a mixture of GANs (one generator per part of the data)."""
        return self.models / MIXTURE_FILE

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / CHECKPOINT_FILE

    def healthy_checkpoint(self, step: int) -> Path:
        """The checkpoint of a step the collapse monitor judged healthy (``train.on_collapse``).
        One per step: after a crash, the step ``last.pt`` names must still be there, though later
        healthy steps of the lost run were written."""
        return self.checkpoints / f"{HEALTHY_CHECKPOINT_STEM}{step:06d}.pt"

    @property
    def healthy_checkpoints(self) -> list[Path]:
        return sorted(self.checkpoints.glob(f"{HEALTHY_CHECKPOINT_STEM}*.pt"))

    @property
    def samples_file(self) -> Path:
        return self.samples / SAMPLES_FILE

    @property
    def samples_picture(self) -> Path:
        return self.samples / PICTURE_FILE

    @property
    def train_log(self) -> Path:
        return self.metrics / TRAIN_LOG_FILE

    @property
    def evaluate_json(self) -> Path:
        return self.metrics / EVALUATE_FILE

    @property
    def diagnose_json(self) -> Path:
        return self.metrics / DIAGNOSE_FILE

    @property
    def probe_json(self) -> Path:
        return self.metrics / PROBE_FILE

    @property
    def diagnosis_md(self) -> Path:
        return self.metrics / DIAGNOSIS_MD

    @property
    def mode_histogram_csv(self) -> Path:
        return self.metrics / MODE_CSV

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    def part(self, index: int) -> Layout:
        """The layout of part ``index`` of a mixture of GANs: nested inside this run's DVC
        outputs (``data/prepared``, ``models``) so the pipeline's stages version it unchanged."""
        return PartLayout(self.root, index)


@dataclass(frozen=True)
class PartLayout(Layout):
    """Part ``index`` of a mixture: inside the folders the pipeline's stages own (DVC outputs), so
    that the parts are versioned with the mixture: data under ``data/prepared``, the model and its
    training log under ``models``, progress pictures under ``plots/progress``."""

    index: int = 0

    @property
    def name(self) -> str:
        return f"part{self.index:02d}"

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared" / "parts" / self.name

    @property
    def models(self) -> Path:
        return self.root / "models" / "parts" / self.name

    @property
    def metrics(self) -> Path:
        return self.models / "metrics"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints" / "parts" / self.name

    @property
    def plots(self) -> Path:
        return self.root / "plots" / "progress" / self.name

    @property
    def progress(self) -> Path:
        return self.plots

    @property
    def samples(self) -> Path:
        return self.root / "samples" / "parts" / self.name


PROJECT_MARKERS = ("dvc.yaml", ".dvc")


def _walk_up(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
    return None


def find_project_root(params_file: str | Path | None = None) -> Path:
    """The project a run belongs to, where ``mlflow.db``, ``runs/`` and the DVC cache live: the
    DVC repository (a folder holding ``dvc.yaml`` or ``.dvc/``) that holds ``params_file``, found
    by walking up from it the way DVC and git walk up from the working directory; for a params file
    outside any repository, the repository around the working directory; else the working directory.

    ``examples/params/mnist-dcgan.yaml`` thus belongs to the repository's root, not to
    ``examples/params/``. Inside ``dvc repro`` DVC names its root itself (``$DVC_ROOT``).
    """
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    if params_file is not None:
        found = _walk_up(Path(params_file).resolve().parent)
        if found is not None:
            return found
    cwd = Path.cwd().resolve()
    return _walk_up(cwd) or cwd


def datasets_mirror() -> Path | None:
    value = os.environ.get(DATASETS_ENV)
    return Path(value) if value else None
