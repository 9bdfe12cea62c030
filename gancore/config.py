"""Parameters: ``params.yaml`` is the one source, validated here by pydantic models.

Every stage reads the same :class:`Params`. Errors are collected into :class:`ParamsError`,
whose message names each offending key path and what would be valid; the CLI turns it into exit
code 2 before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, ValidationInfo, field_validator, model_validator

from gancore.datasets import REGISTRY as DATASETS
from gancore.datasets import DatasetSpec
from gancore.errors import ParamsError
from gancore.names import (
    ClassifierName,
    DatasetName,
    LossName,
)
from gancore.params_tree import apply_overrides, flatten, read_params_tree

# The monitor figures train.keep_best can select on, and whether higher is better.
# Seeds are below 2**32: numpy's RandomState (the Inception Score's shuffle) takes no larger one.
SEED_LIMIT = 2**32
MONITOR_FIGURES = {"high_quality_fraction": True, "modes_covered": True, "mode_kl": False}
KeepBest = Literal["high_quality_fraction", "modes_covered", "mode_kl"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_truth_value_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes true for 1: train.steps=yes trained one step, seed=true was seed 1.
        if isinstance(value, bool) and info.field_name and not _admits_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{value!r} is a truth value; this setting takes a number or a name")
        return value


def _admits_bool(annotation: Any) -> bool:
    """Whether a field of this type takes true/false (bool, Any, or a union or literal with them)."""
    if annotation is bool or annotation is Any:
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return any(isinstance(a, bool) for a in args)
    return any(_admits_bool(a) for a in args)


class DataParams(_Section):
    name: DatasetName = "ring8"
    n_train: Optional[int] = Field(None, gt=0, description="training examples (toy: points drawn; images: a seeded subset; null: all)")
    n_test: Optional[int] = Field(
        None, gt=0, description="held-out examples for evaluation (null: the data set's test split / 10,000 toy points)"
    )
    image_size: Optional[int] = Field(
        None, ge=8, le=1024, description="side of square images (null: native size; required for image_folder)"
    )
    path: Optional[str] = Field(
        None, description="image_folder: a folder of images; points: a .npy or .csv file of numeric columns (one row per point)"
    )
    classifier_epochs: int = Field(
        8, ge=0, description="epochs for the domain classifier trained during prepare (0: none); 8 gives MNIST's published score"
    )
    on_bad_image: Literal["fail", "skip"] = Field(
        "fail",
        description="image_folder: a file that cannot be decoded fails prepare (naming every such file) or is skipped with a warning",
    )


class ModelParams(_Section):
    arch: str = Field("mlp", description="architecture plugin (`gan plugins list`)")
    latent_dim: int = Field(16, gt=0, le=4096)
    options: dict[str, Any] = Field(default_factory=dict, description="architecture options (`gan plugins list`)")
    pack: int = Field(
        1,
        ge=1,
        le=16,
        description="PacGAN packing: the discriminator judges this many samples jointly (1: off); a step draws train.batch_size packed examples of pack samples each",
    )


class LossParams(_Section):
    name: LossName = "non_saturating"
    gp_weight: float = Field(10.0, ge=0, description="gradient-penalty weight (wasserstein_gp)")


class TrainParams(_Section):
    steps: int = Field(5000, gt=0, description="generator updates")
    seed: Optional[int] = Field(
        None,
        ge=0,
        lt=SEED_LIMIT,
        description="training's own seed: initial weights, batch order, latent noise, augmentation draws (null: the top-level seed, "
        "which also draws the data, the samples' latents and evaluation's subsets); set it to repeat training on the same data",
    )
    batch_size: int = Field(
        256,
        gt=0,
        description="samples per step (real and generated each); auto: 256 for vector data, 64 for images (AUTO_TRAIN)",
    )
    lr_g: float = Field(5e-4, gt=0, lt=1, description="generator learning rate; auto: 5e-4 for vector data, 2e-4 for images (AUTO_TRAIN)")
    lr_d: float = Field(
        1e-3, gt=0, lt=1, description="discriminator learning rate; auto: 1e-3 for vector data, 2e-4 for images (AUTO_TRAIN)"
    )
    lr_decay: float = Field(
        0.0, ge=0, le=1, description="final share of the steps over which both learning rates fall linearly to 0 (0: constant)"
    )
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    n_critic: int = Field(1, ge=1, le=100, description="discriminator updates per generator update")
    ema_decay: Optional[float] = Field(None, gt=0, lt=1, description="EMA of the generator weights (null: off)")
    checkpoint_every: int = Field(500, gt=0)
    log_every: int = Field(10, gt=0, description="steps between rows of the training log")
    resident_data: Literal["auto", "always", "never"] = "auto"
    resident_max_gb: float = Field(4.0, gt=0, description="largest prepared data kept resident on the device under 'auto'")
    monitor_every: Optional[int] = Field(500, gt=0, description="steps between collapse-monitor checks and progress pictures (null: off)")
    keep_best: Optional[KeepBest] = Field(None, description="keep models/best/ at the best value of this monitor figure (null: off)")
    on_collapse: Literal["continue", "stop", "rollback"] = Field("continue", description="what the monitor does when it sees mode collapse")
    max_rollbacks: int = Field(3, ge=0, description="rollbacks allowed under on_collapse=rollback before training continues regardless")
    devices: int = Field(
        1,
        ge=1,
        le=64,
        description="processes (one per GPU, or CPU processes with gloo) training with DistributedDataParallel; >1 launches torchrun",
    )
    compile: Union[bool, Literal["auto"]] = Field(
        "auto", description="torch.compile the training step: true, false, or auto (eager until compiling is shown to pay: see the README)"
    )
    channels_last: Union[bool, Literal["auto"]] = Field(
        "auto",
        description="image batches and models in channels_last memory (faster convolutions on CPUs and GPUs): true, false, "
        "or auto (on for image models unless compiled); false for a plugin whose forward needs contiguous images (x.view)",
    )


class SampleParams(_Section):
    generator: Literal["last", "best"] = Field("last", description="the final generator, or models/best/ (train.keep_best)")
    n: Optional[int] = Field(
        None, gt=0, description="samples to draw (null: the data set's protocol: 2,500 for 2D, 26,000 for stacked_mnist, 10,000 otherwise)"
    )
    batch_size: int = Field(1000, gt=0)
    grid_size: int = Field(64, gt=0, le=1024, description="images in the sample picture")


class EvaluateParams(_Section):
    classifier: ClassifierName = "domain"
    splits: int = Field(10, gt=0)
    batch_size: int = Field(256, gt=0)
    pr_k: int = Field(3, gt=0, description="neighbours for improved precision/recall")
    dc_k: int = Field(5, gt=0, description="neighbours for density/coverage")
    max_real: Optional[int] = Field(10000, gt=0, description="real examples to compare against (null: all of evaluate.reference)")
    reference: Literal["test", "train"] = Field(
        "test",
        description="the real split compared against: test (held out) or train (papers' FID protocol: e.g. 50,000 samples "
        "against CIFAR-10's training set, with sample.n=50000 and max_real=null)",
    )


class DiagnoseParams(_Section):
    ndb_bins: int = Field(
        100,
        ge=2,
        description="NDB's k-means bins over the training data; vector data with flat rows outside every cluster are also cut "
        "into regions at this resolution (ndb_bins times their share) to see where the samples outside go",
    )
    ndb_alpha: float = Field(
        0.05, gt=0, lt=1, description="NDB's level: a bin differs when its two-proportion z-test's p-value is below it"
    )
    confidence: float = Field(0.9, gt=0, lt=1, description="classifier confidence above which an image sample counts as high quality")
    duplicate_fraction: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="near duplicate / copy: closer than this quantile of real data's nearest-neighbour distances (a faithful generator's rate)",
    )


class MixtureParams(_Section):
    enabled: bool = Field(True, description="train one GAN per part of the data and sample their mixture (false: one GAN)")
    partition: Literal["auto", "labels", "kmeans"] = Field(
        "auto",
        description="auto: vector data's own clusters; images one part (k-means when parts is a number) | labels (one part per class) | kmeans",
    )
    parts: Union[int, Literal["auto"]] = Field(
        "auto", description="clusters to split the data into: auto (chosen from the data by BIC, up to max_parts) or a number >= 2"
    )
    max_parts: int = Field(50, ge=2, le=1000, description="the largest part count parts=auto considers")
    steps: Optional[int] = Field(1000, gt=0, description="training steps of each part (null: train.steps)")

    @field_validator("parts")
    @classmethod
    def _parts(cls, v: int | str) -> int | str:
        if v != "auto" and not 2 <= int(v) <= 1000:
            one = " (one GAN for the whole data: mixture.enabled=false)" if int(v) == 1 else ""
            raise ValueError(f"must be auto or a number of parts from 2 to 1000{one}")
        return v


class AugmentParams(_Section):
    policy: str = Field(
        "",
        description="augmentation D sees on real and generated samples (DiffAugment): images: any of color,translation,cutout,geometric,blit,ada_color (geometric: ADA's scaling, rotation, translation; blit: ADA's x-flip, quarter turns, whole-pixel shifts; both for data without an upright, or with adaptive; ada_color: ADA's brightness, contrast, luma flip, hue, saturation, with adaptive); vectors: jitter; empty: none",
    )
    adaptive: bool = Field(
        False,
        description="ADA: apply each transform with a probability p, steered by augment.signal (r_t = E[sign(D(x_real) - b)] towards target, b D's decision boundary: 0, least_squares 0.5; "
        "wasserstein_gp has none and takes a fixed policy only; or held_out)",
    )
    signal: Literal["r_t", "held_out"] = Field(
        "r_t",
        description="what steers p: r_t (ADA: raise p while r_t > target) or held_out (ADA's rule on memorisation: raise p while D "
        "calls over a tenth more of its training examples real than of held-out ones, the diagnosis's tolerance; lower it "
        "otherwise; every other test example steers, the diagnosis measures on the rest)",
    )
    target: float = Field(0.6, gt=0, lt=1, description="the r_t that adaptive augmentation steers to (ADA: 0.6; signal r_t)")
    kimg: float = Field(
        500.0, gt=0, allow_inf_nan=False, description="p can move from 0 to 1 in this many thousand real samples (ADA's 500)"
    )
    interval: int = Field(4, ge=1, description="steps between adjustments of p (ADA: 4)")
    jitter: float = Field(
        0.05,
        gt=0,
        allow_inf_nan=False,
        description="jitter: the noise's standard deviation, as a share of each coordinate's spread within the data's modes "
        "(the whole training data's when the modes are unknown)",
    )


def _probe_budgets() -> list[int | Literal["all"]]:
    return [10, 100, "all"]


class ProbeParams(_Section):
    enabled: bool = Field(False, description="gan probe: a linear probe of the trained discriminator's features (needs labels)")
    labels_per_class: list[Union[PositiveInt, Literal["all"]]] = Field(
        default_factory=_probe_budgets, min_length=1, description="labelled training examples per class the probe may use"
    )
    l2: float = Field(1e-3, ge=0, description="L2 penalty of the probe's logistic regression (standardised features)")


class TrackingParams(_Section):
    enabled: bool = True
    experiment: str = Field("gancore", min_length=1)


# train.batch_size / lr_g / lr_d: auto. Vector data: 256 points a step cost microseconds anywhere,
# and a generator at half the discriminator's rate lands tightly on modes of sigma 0.01 (equal
# rates of 1e-3 smear them). Images: the DCGAN recipe (Radford et al. 2015: Adam 2e-4 for both
# players) with the batch of SN-GAN and of PacGAN's stacked-MNIST DCGAN, 64; a DCGAN step on 64
# images is a quarter of the CPU time of 256, which keeps a first result within minutes on a CPU.
AUTO_TRAIN: dict[str, dict[str, Any]] = {
    "vector": {"batch_size": 256, "lr_g": 5e-4, "lr_d": 1e-3},
    "image": {"batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4},
}


class Params(_Section):
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    device: str = "auto"
    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    loss: LossParams = Field(default_factory=LossParams)
    train: TrainParams = Field(default_factory=TrainParams)
    sample: SampleParams = Field(default_factory=SampleParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    diagnose: DiagnoseParams = Field(default_factory=DiagnoseParams)
    mixture: MixtureParams = Field(default_factory=MixtureParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    probe: ProbeParams = Field(default_factory=ProbeParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)

    @model_validator(mode="before")
    @classmethod
    def _auto_train(cls, tree: Any) -> Any:
        """``train.batch_size``, ``lr_g``, ``lr_d``: ``auto`` (or absent) -> :data:`AUTO_TRAIN` of the data's kind."""
        if not isinstance(tree, dict) or not isinstance(tree.get("train", {}), dict):
            return tree
        train = dict(tree.get("train") or {})
        data = tree.get("data") or {}
        name = data.get("name", "ring8") if isinstance(data, dict) else getattr(data, "name", "ring8")
        spec = DATASETS.get(name)  # an unknown name is reported by the field's validation
        auto = AUTO_TRAIN[spec.kind if spec else "image"]
        for key, value in auto.items():
            if train.get(key, "auto") == "auto":
                train[key] = value
        return {**tree, "train": train}

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        base, _, index = v.partition(":")
        if base not in ("auto", "cpu", "cuda", "mps") or (index and (base != "cuda" or not index.isdigit())):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
        return v

    # -- derived facts -----------------------------------------------------------------------
    @property
    def dataset(self) -> DatasetSpec:
        return DATASETS[self.data.name]

    @property
    def data_kind(self) -> str:
        return self.dataset.kind

    @property
    def data_shape(self) -> tuple[int, ...]:
        spec = self.dataset
        if spec.kind == "vector":
            if spec.shape is not None:
                return spec.shape
            from gancore.data.points import PointsError, point_dims

            try:
                return (point_dims(self.data.path or ""),)
            except PointsError:
                return (0,)  # reported by validation as a data.path problem
        assert spec.channels is not None  # every image spec names its channels
        size = self.data.image_size or (spec.shape[-1] if spec.shape else 0)  # 0: image_size missing, reported by validation
        return (spec.channels, size, size)

    @property
    def training_seed(self) -> int:
        """The seed of training's random streams: ``train.seed``, or the top-level seed when null."""
        return self.seed if self.train.seed is None else self.train.seed

    @property
    def n_samples(self) -> int:
        if self.sample.n is not None:
            return self.sample.n
        return self.dataset.samples

    def flat(self) -> dict[str, Any]:
        """Parameters flattened to ``section.key`` -> value (for trackers and hashes)."""
        return flatten(self.model_dump(mode="json"))

    def digest(self, *sections: str) -> str:
        """A stable hash of the named sections (all when none are named)."""
        dump = self.model_dump(mode="json")
        if sections:
            dump = {k: dump[k] for k in sections}
        return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Params
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(model.model_fields)


# pydantic's names for the branches of a union in an error's location (train.compile.bool,
# mixture.parts.literal['auto']): not keys of params.yaml.
_UNION_BRANCH = re.compile(r"(int|bool|float|str|none|constrained-\w+|literal\[.*\]|function-.*)")


def _wanted(err: Any) -> str:
    """What one branch of a union accepts, in words."""
    if err["type"] in ("int_parsing", "int_type", "int_from_float"):
        return "a whole number"
    if err["type"] in ("bool_parsing", "bool_type"):
        return "true or false"
    return str(err["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    branches: dict[str, tuple[list[str], Any]] = {}  # a union's key -> what its branches accept, and the input
    for err in exc.errors():
        loc = tuple(err["loc"])
        branch = err["type"] != "extra_forbidden"  # an unknown key may be named like a branch (train: {str: 3})
        cut = next((i for i, p in enumerate(loc) if branch and isinstance(p, str) and _UNION_BRANCH.fullmatch(p)), None)
        if cut is not None:  # one problem for the key, naming every form it takes
            key = ".".join(str(p) for p in loc[:cut]) or "(top level)"
            if key not in branches:
                branches[key] = ([], err.get("input"))
                problems.append((key, ""))
            branches[key][0].append(_wanted(err))
            continue
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys here: {', '.join(_allowed_keys(loc))}"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")  # a validator's own words
            if "input" in err and err["type"] not in ("missing",):
                msg += f" (got {err['input']!r})"
        problems.append((key, msg))

    def either(forms: list[str]) -> str:
        forms = list(dict.fromkeys(forms))
        return forms[0] if len(forms) == 1 else ", ".join(forms[:-1]) + ", or " + forms[-1]

    return [(key, msg or f"should be {either(branches[key][0])} (got {branches[key][1]!r})") for key, msg in problems]


def validate(tree: dict[str, Any], source: str = "params", check_plugins: bool = True) -> Params:
    """Validate a parameter tree; raise :class:`ParamsError` listing every problem."""
    if not isinstance(tree, dict):
        raise ParamsError([("(top level)", f"expected a mapping of sections, got {type(tree).__name__}")], source)
    try:
        params = Params.model_validate(tree)
    except ValidationError as exc:
        raise ParamsError(_problems(exc), source) from None
    from gancore.config_checks import semantic_problems

    problems = semantic_problems(params, check_plugins)
    if problems:
        raise ParamsError(problems, source)
    return params


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None, check_plugins: bool = True) -> Params:
    tree = read_params_tree(path)
    source = str(path) + (" with --set " + " ".join(overrides) if overrides else "")
    return validate(apply_overrides(tree, list(overrides or [])), source, check_plugins)
