"""Typed run configuration: one pydantic model per YAML section, unknown keys rejected.

Reading and writing config files (YAML, --set overrides, relative paths): augment.config_file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from augment.registry import (ARMS, CLASSICAL_PRESETS, CROSS_SOURCES, DEFAULT_ARMS, DEFAULT_CROSS_SOURCES,
                              DIFFAUGMENT_POLICIES, GENERATORS, PROTOCOLS, SAMPLERS, FeatureSpace,
                              check_generator_mode, check_members, generator_modes)

# A boolean key takes true or false only: YAML 1.1's yes/no/on/off stay strings (augment.config_file)
# and are refused, so `enabled: no` cannot silently switch a stage off.
Bool = Annotated[bool, Strict()]


def _torchvision_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _torchvision_model(name: str) -> str:
    if name not in _torchvision_models():
        raise ValueError(f"{name!r} is not a torchvision classification model")
    return name


class ConfigWarning(UserWarning):
    """A config key that was renamed, or that does nothing in the chosen combination (shown once)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source: Literal["digits", "folder", "csv", "idx"] = "digits"
    path: Path | None = None
    channels: Literal[1, 3] = 1
    # auto: the shared native size, or (mixed sizes) the median shorter side, at most AUTO_MAX_SIZE;
    # native: the shared native size (mixed sizes are an error); N: N x N.
    image_size: Literal["auto", "native"] | Annotated[int, Field(ge=4, le=1024)] = "auto"
    resize: Literal["pad", "crop"] = "pad"  # to a square working size: pad (keep all) or center-crop
    per_class: int | None = Field(default=None, ge=1)
    imbalance_ratio: float = Field(default=1.0, ge=1.0)
    class_counts: dict[str, int] | None = None
    scarcity_seed: int | None = None  # which train images per_class/class_counts keep; null: derived from seed
    val_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    test_fraction: float = Field(default=0.3, gt=0.0, lt=0.9)
    # Images whose split the data does not give (train/ val/ test/ folders, a CSV split column,
    # test_path): hash (stable: by each image's content) or seeded (exact stratified fractions).
    split: Literal["hash", "seeded"] = "hash"
    test_path: Path | None = None  # the test split as its own folder, CSV or IDX files (read like path)
    min_per_class: int = Field(default=5, ge=3)
    on_bad_image: Literal["error", "skip"] = "error"
    max_pixels: int = Field(default=50_000_000, ge=1)
    alpha_background: Literal["black", "white"] = "black"

    @field_validator("class_counts", mode="before")
    @classmethod
    def _class_names_as_text(cls, counts):
        """Class names are folder names, so text: `{0: 10}` means class '0' (digits' classes are numbers)."""
        return {str(k): v for k, v in counts.items()} if isinstance(counts, dict) else counts

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.class_counts is not None:
            if self.per_class is not None:
                raise ValueError("set data.per_class or data.class_counts, not both")
            if any(n < 1 for n in self.class_counts.values()):
                raise ValueError("data.class_counts: every count must be at least 1")
        if self.source in ("folder", "csv", "idx") and self.path is None:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if self.imbalance_ratio > 1.0 and self.per_class is None:
            raise ValueError("data.imbalance_ratio needs data.per_class (the majority class's count)")
        if self.test_path is not None and self.source == "digits":
            raise ValueError("data.test_path needs data.source folder, csv or idx (digits has no files)")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("data.val_fraction + data.test_fraction must be below 0.9")
        return self


class ClassicalConfig(_Section):
    enabled: Bool = True
    preset: Literal[CLASSICAL_PRESETS] = "light"
    flips: Bool = False
    transforms: list[dict[str, Any]] | None = None
    pipeline_file: Path | None = None
    multiplier: int = Field(default=2, ge=0, le=100)
    target: int | None = Field(default=None, ge=1)
    balance: Bool = False
    workers: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ClassicalConfig:
        if self.transforms is not None and self.pipeline_file is not None:
            raise ValueError("set classical.transforms or classical.pipeline_file, not both")
        if self.target is not None and self.balance:
            raise ValueError("set classical.target or classical.balance, not both (a target already balances)")
        if self.pipeline_file is not None and not Path(self.pipeline_file).is_file():
            raise ValueError(f"classical.pipeline_file: {self.pipeline_file} not found")
        return self


class SmoteConfig(_Section):
    enabled: Bool = True
    sampler: str = "SMOTE"
    params: dict[str, Any] = Field(default_factory=dict)
    features: FeatureSpace = "pixels"
    pca_components: int | None = Field(default=None, ge=1)
    backbone: str = "resnet18"
    weights: Path | None = None
    input_size: int = Field(default=64, ge=16, le=512)
    # every class filled up to this multiple of the largest class's train count (was smote.multiplier)
    fill_ratio: float = Field(default=3.0, ge=1.0, le=100.0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "multiplier" in data:
            if "fill_ratio" in data:
                raise ValueError("smote.multiplier is the old name of smote.fill_ratio: set only fill_ratio")
            warnings.warn("smote.multiplier is now smote.fill_ratio (the same meaning: every class filled up to "
                          "this multiple of the largest class); rename the key", ConfigWarning, stacklevel=2)
            data = {**{k: v for k, v in data.items() if k != "multiplier"}, "fill_ratio": data["multiplier"]}
        return data

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        return _torchvision_model(name)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}")
        return name


class GanConfig(_Section):
    enabled: Bool = True
    mode: str = "per_class+mix"  # a generator of augment.registry.GENERATORS, or several joined by "+" (an ensemble)
    steps: int = Field(default=2000, ge=1)
    image_size: Literal[8, 16, 32, 64] = 32
    batch_size: int = Field(default=32, ge=2)
    nz: int = Field(default=64, ge=2)
    ngf: int = Field(default=32, ge=4)
    ndf: int = Field(default=32, ge=4)
    lr: float = Field(default=2e-4, gt=0)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    diffaugment: list[Literal[DIFFAUGMENT_POLICIES]] = Field(
        default_factory=lambda: ["translation", "cutout"]
    )
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    lecam: float = Field(default=0.0, ge=0)  # LeCam regularisation weight of D (Tseng et al. 2021); 0: off
    lecam_decay: float = Field(default=0.99, gt=0, lt=1)  # the moving average of D's logits it anchors to
    r1: float = Field(default=0.0, ge=0)  # R1 penalty gamma on D's gradient at real images; 0: off
    # mode mix: weight of the reconstruction loss, mean |decode(encode(x)) - x| over real images, in G's loss
    mix_reconstruction: float = Field(default=10.0, ge=0)
    # The images the GAN learns from (and mode mix mixes): the real train images, or those and the
    # classical stage's albumentations copies of them (the GAN then runs after the classical stage)
    train_on: Literal["real", "real+classical"] = "real"
    # Which generator the synthesize stage samples: the last step's EMA generator (last), or the
    # snapshot (one every sample_every steps) and latent scale whose gated samples give the best
    # classification accuracy score on real val (cas: one classifier per snapshot and scale; never test)
    checkpoint_selection: Literal["last", "cas"] = "last"
    latent_scales: list[Annotated[float, Field(gt=0, le=4)]] = Field(default_factory=lambda: [1.0], min_length=1)
    # with checkpoint_selection cas: the gan stage scores each snapshot by CAS on val as it trains and
    # stops once `patience` snapshots in a row have not beaten the best (null: every step is trained)
    patience: int | None = Field(default=2, ge=1)
    checkpoint_every: int = Field(default=500, ge=1)
    sample_every: int = Field(default=500, ge=1)
    samples_per_class: int = Field(default=100, ge=1)
    shards: int = Field(default=1, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    channels_last: Bool | None = None  # null: channels_last on CUDA only
    cuda_graphs: Literal["auto", "on", "off"] = "auto"  # auto: the step as one CUDA graph on CUDA; on: CUDA or error

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: str) -> str:
        return check_generator_mode(mode)

    @model_validator(mode="after")
    def _check(self) -> GanConfig:
        members = generator_modes(self.mode)
        if self.shards > 1 and not (len(members) == 1 and GENERATORS[self.mode].shardable):
            shardable = ", ".join(m for m, e in GENERATORS.items() if e.shardable)
            raise ValueError(f"gan.shards > 1 needs a gan.mode whose classes train apart ({shardable}), not {self.mode!r}")
        for m in members:
            if self.nz < GENERATORS[m].min_nz:
                raise ValueError(f"gan.mode {m} needs gan.nz >= {GENERATORS[m].min_nz}, got {self.nz}")
        return self

    @property
    def stops_early(self) -> bool:
        """The gan stage scores its snapshots while it trains and may stop (gan.patience): it then
        needs the gate's judge first, and its result depends on the gate and the classifier."""
        return self.enabled and self.checkpoint_selection == "cas" and self.patience is not None and self.shards == 1

    @property
    def sources(self) -> tuple[str, ...]:
        """The manifest sources of the train images the GAN learns from, in load_split's order."""
        return tuple(self.train_on.split("+"))


class GateConfig(_Section):
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    min_novelty: float = Field(default=0.25, ge=0.0)
    oversample: float = Field(default=2.0, ge=1.0, le=20.0)
    min_diversity: float = Field(default=0.5, ge=0.0)
    keep_collapsed: Bool = False
    # which passing samples of a class are kept: the most confident, a seeded random draw, or a spread in the judge's
    # feature space (farthest-point from the most confident); auto: farthest for mix and hydra, else confidence
    select: Literal["auto", "confidence", "random", "farthest"] = "auto"


def step_budget(steps: int | str, n_train: int, batch_size: int, epochs: float, min_steps: int, max_steps: int) -> int:
    """Training steps: `steps` as given, or "auto": `epochs` passes over the real train images,
    clipped to [min_steps, max_steps] (tiny sets need a floor of steps, large ones a ceiling)."""
    if steps != "auto":
        return int(steps)
    return int(min(max_steps, max(min_steps, -(-epochs * n_train // batch_size))))


class BenchmarkConfig(_Section):
    seeds: int = Field(default=5, ge=1)
    arms: list[str] = Field(default_factory=lambda: list(DEFAULT_ARMS))
    # step (b): the recipe chosen on val crossed with each of these sources (registry.RECIPES); [] for none
    cross_sources: list[Literal[tuple(CROSS_SOURCES)]] = Field(default_factory=lambda: list(DEFAULT_CROSS_SOURCES))
    # The classifier's recipe (docs/outputs.md, "The benchmark's classifier"; chosen on MNIST val by
    # benchmarks/classifier_recipe.py). steps "auto": epochs over the real train images, clipped.
    steps: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    epochs: float = Field(default=40, gt=0)
    min_steps: int = Field(default=600, ge=1)
    max_steps: int = Field(default=4000, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    width: int = Field(default=32, ge=4)
    depth: int = Field(default=3, ge=1, le=5)
    dropout: float = Field(default=0.3, ge=0, lt=1)
    classifier: str = "cnn"
    weights: Path | None = None
    input_size: int | None = Field(default=None, ge=16, le=512)  # null: the weights' own transforms()
    # Synthetic images (classical copies, SMOTE images, GAN samples) as a side stream of every batch.
    synthetic_share: Literal["auto"] | Annotated[float, Field(ge=0, le=1)] = "auto"
    share_grid: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.1, 0.25, 0.5], min_length=1)
    synthetic_weight: float = Field(default=1.0, ge=0)
    soft_labels: Bool = False
    temperature: float = Field(default=2.0, gt=0)
    online_gan: Bool = False  # GAN arms draw fresh, gated generator samples every batch instead of the kept pool
    # class-balanced sampling: only in the arms named for it (arm), in every arm (all), or in every
    # arm when the real train classes differ by more than BALANCE_RATIO in size (auto)
    balanced_sampling: Literal["auto", "arm", "all"] = "auto"
    classical_on_the_fly: Bool = True  # classical arms: the classical pipeline on every batch instead of the copies
    # Where every choice is made: val, or repeated stratified k-fold over real train+val (augment.core.bench.
    # selection); auto: k-fold when the smallest class has fewer than kfold_below val images. Never on test.
    selection: Literal[("auto", *PROTOCOLS)] = "auto"
    kfold_below: int = Field(default=5, ge=1)
    folds: int = Field(default=5, ge=2)
    linear_probe: Bool = True
    workers: int | None = Field(default=None, ge=1)  # processes for the arms x seeds classifiers; null: every core on CPU
    # classifiers stacked in one network (core.classify.engine); auto: core.bench.jobs.auto_per_round (docs/config.md)
    models_per_round: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    # on-the-fly augmentation batched on the device, or image by image on the CPU; auto: device if every op has one
    augment_on: Literal["auto", "cpu", "device"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    cuda_graphs: Literal["auto", "on", "off"] = "off"  # auto/on: a round's step as one CUDA graph; not yet run on a GPU

    def steps_for(self, n_train: int) -> int:
        """The step budget for `n_train` real train images (benchmark.steps, or auto)."""
        return step_budget(self.steps, n_train, self.batch_size, self.epochs, self.min_steps, self.max_steps)

    @field_validator("classifier")
    @classmethod
    def _known_classifier(cls, name: str) -> str:
        if name != "cnn" and name not in _torchvision_models():
            raise ValueError(f"{name!r} is neither 'cnn' nor a torchvision classification model")
        return name

    # The keys the classifier trains with: a stage training it (SMOTE's cnn features, the judge) reads only these.
    TRAINER_KEYS: ClassVar[tuple[str, ...]] = ("steps", "epochs", "min_steps", "max_steps", "batch_size", "lr",
                                               "weight_decay", "schedule", "label_smoothing", "width", "depth",
                                               "dropout", "classifier", "weights", "input_size", "precision",
                                               "augment_on", "cuda_graphs")

    def trainer_kwargs(self) -> dict:
        """The classifier settings every arm (and the quality gate's judge) trains with."""
        kw = {key: getattr(self, key) for key in self.TRAINER_KEYS}
        kw["model"] = kw.pop("classifier")
        return kw

    @field_validator("arms", "cross_sources")
    @classmethod
    def _known_arms(cls, arms: list[str], info) -> list[str]:
        if len(set(arms)) != len(arms):
            raise ValueError(f"a name is listed twice in {arms}")
        if info.field_name == "cross_sources":
            return arms
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
        if "real" not in arms:
            raise ValueError("the 'real' arm is required: every gain is measured against it")
        return arms

    @model_validator(mode="after")
    def _check_steps(self) -> BenchmarkConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"benchmark.min_steps ({self.min_steps}) is above benchmark.max_steps ({self.max_steps})")
        return self


class OrchestrationConfig(_Section):
    """How the Prefect flow runs its tasks; changes nothing a stage computes."""

    retries: int = Field(default=2, ge=0, le=10)
    retry_delay: float = Field(default=10.0, ge=0.0)
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = None
    dask_cluster: str | None = None
    workers: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> OrchestrationConfig:
        if self.task_runner != "dask" and (self.dask_address or self.dask_cluster):
            raise ValueError("orchestration.dask_address / dask_cluster need orchestration.task_runner: dask")
        if self.dask_address and self.dask_cluster:
            raise ValueError("set orchestration.dask_address (an existing cluster) or dask_cluster (a new one), not both")
        if self.dask_cluster and "." not in self.dask_cluster:
            raise ValueError("orchestration.dask_cluster must be an import path such as dask_cuda.LocalCUDACluster")
        return self


class ExpandConfig(_Section):
    # The deliverable (expanded/, recipe/) is built from every real image of these splits, once the
    # benchmark has chosen on its held-out splits: train, trainval (default) or all (test too).
    refit: Literal["train", "trainval", "all"] = "trainval"
    # A winning arm of GAN samples: train the GAN again on the refit splits and deliver its samples (costs time).
    refit_generator: Bool = False


class Config(_Section):
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    run_root: Path = Path("runs")
    data: DataConfig = Field(default_factory=DataConfig)
    classical: ClassicalConfig = Field(default_factory=ClassicalConfig)
    smote: SmoteConfig = Field(default_factory=SmoteConfig)
    gan: GanConfig = Field(default_factory=GanConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    expand: ExpandConfig = Field(default_factory=ExpandConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)

    @field_validator("device")
    @classmethod
    def _known_device(cls, name: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+", name):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N (N the GPU's index), got {name!r}")
        return name

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.smote.enabled and self.smote.features == "discriminator" and not self.gan.enabled:
            raise ValueError("smote.features 'discriminator' needs the GAN stage (gan.enabled: true)")
        if self.smote.enabled and self.smote.features == "discriminator" and not (
                len(generator_modes(self.gan.mode)) == 1 and GENERATORS[self.gan.mode].discriminator):
            with_d = ", ".join(m for m, e in GENERATORS.items() if e.discriminator)
            raise ValueError(f"smote.features 'discriminator' needs one generator that trains a discriminator "
                             f"(gan.mode: {with_d}), not {'the ensemble ' if '+' in self.gan.mode else ''}"
                             f"gan.mode {self.gan.mode!r}")
        if self.gan.enabled and self.gan.train_on == "real+classical" and not self.classical.enabled:
            raise ValueError("gan.train_on 'real+classical' needs the classical stage (classical.enabled: true)")
        check_members(self.benchmark.arms, self.benchmark.cross_sources, self.gan.mode)
        return self

    def section_hash(self, *keys: str) -> str:
        """Stable short hash of the named sections or dotted keys (e.g. "benchmark.steps"), for
        stage fingerprints."""
        dumped = self.model_dump(mode="json")
        blob = json.dumps({k: functools.reduce(lambda node, part: node[part], k.split("."), dumped) for k in keys},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

