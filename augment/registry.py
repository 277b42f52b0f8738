"""Every name a config can choose, in one place: arms, samplers, feature spaces, generator modes.

Config validation, the stages and the report all read these tables, so a new arm, sampler,
feature space or generator mode is one entry here (plus its code in augment/core/).
Nothing heavy is imported: samplers are named by import path and resolved when used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

# --------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class GeneratorEntry:
    """One generator (a gan.mode): its code, a subclass of augment.core.gan.kinds.Kind named by import
    path (resolved when used), and what the config and the stages need to know without importing it."""

    impl: str  # "module:Class"
    description: str
    shardable: bool = False  # its classes are independent networks: gan.shards may split them, merge() joins them
    min_nz: int = 2  # the smallest gan.nz it accepts
    select: str = "confidence"  # gate.select auto's rule for its samples
    discriminator: bool = True  # it trains a discriminator (smote.features: discriminator reads it)
    keys: tuple[str, ...] = ()  # gan config keys only this generator reads (set for another: a warning)


GENERATORS: dict[str, GeneratorEntry] = {
    "per_class": GeneratorEntry("augment.core.gan.dcgan:PerClass",
                                "one DCGAN per class, all classes trained as one grouped network; shardable",
                                shardable=True),
    "conditional": GeneratorEntry("augment.core.gan.dcgan:Conditional",
                                  "one label-conditioned DCGAN (projection discriminator) shared by all classes"),
    # min_nz: augment.core.gan.mix.SELECT_DIMS + 1 (a test keeps them equal; this module imports no torch)
    "mix": GeneratorEntry("augment.core.gan.mix:Mix",
                          "an encoder-decoder that mixes the features of two real images of a class under a random "
                          "mask (ChimeraMix/DAGAN style; projection discriminator), shared by all classes",
                          min_nz=41, select="farthest", keys=("mix_reconstruction",)),
    # min_nz: augment.core.gan.hydra.SELECT_DIMS + 1
    "hydra": GeneratorEntry("augment.core.gan.hydra:Hydra",
                            "the mix generator's encoder-decoder mixing three real images of a class, each "
                            "over one region of a random Voronoi partition (HydraMix style)",
                            min_nz=55, select="farthest", keys=("mix_reconstruction",)),
}
# gan.mode names one generator or an ensemble of several joined by "+" ("per_class+mix"): each member
# trained as alone, half the kept samples of each class from each (augment.core.gan.ensemble).


# --------------------------------------------------------------------------- arms

ArmKind = Literal["baseline", "synthetic", "diagnostic"]


@dataclass(frozen=True)
class Arm:
    """What one benchmark arm trains on: manifest sources, plus how batches are drawn.

    kind: "baseline" arms use no generated images; "synthetic" arms do and are candidates to
    recommend only if they beat the best baseline; a "diagnostic" arm is reported, never recommended.
    """

    sources: tuple[str, ...]
    kind: ArmKind
    augment: str | None = None  # on-the-fly augmentation (torchvision)
    balanced: bool = False  # class-balanced sampling
    description: str = ""
    classical: bool = False  # the classical (albumentations) pipeline on the fly, instead of the "classical" copies
    recipe: str | None = None  # the recipe arm (RECIPES) whose batches this arm's batches follow; None: none

    @property
    def source(self) -> str | None:
        """The synthetic source (CROSS_SOURCES) this arm adds to its recipe, None for none."""
        extra = [s for s in self.sources if s in CROSS_SOURCES]
        return extra[0] if len(extra) == 1 and self.recipe is not None else None

    @property
    def side_stream(self) -> bool:
        """Real images plus synthetic ones: the synthetic ones are a side stream with a share per batch."""
        return "real" in self.sources and len(self.sources) > 1


# Recipes: how batches are augmented, with no generated images. Each is a baseline arm; step (a) of the
# benchmark chooses one of them on val (or by k-fold), step (b) crosses it with every synthetic source.
RECIPES: dict[str, Arm] = {
    "real": Arm(("real",), "baseline", description="the real train images alone", recipe="real"),
    "real+classical": Arm(("real", "classical"), "baseline", description="plus the classical (albumentations) copies",
                          recipe="real+classical"),
    "real+trivialaugment": Arm(("real",), "baseline", augment="trivialaugment",
                               description="torchvision's TrivialAugmentWide on the fly", recipe="real+trivialaugment"),
    "real+classical+trivialaugment": Arm(("real", "classical"), "baseline", augment="trivialaugment",
                                         description="the classical copies, TrivialAugmentWide on the fly over them",
                                         recipe="real+classical+trivialaugment"),
}


def member_source(mode: str) -> str:
    """The source of one generator's kept samples: "mix" -> "gan:mix" (manifest rows: source gan, generator mix)."""
    return f"gan:{mode}"


def source_member(source: str) -> tuple[str, str | None]:
    """(the manifest source, the generator) of a source name: "gan:mix" -> ("gan", "mix"), "smote" -> ("smote", None)."""
    stage, _, member = source.partition(":")
    return stage, member or None


# Sources: what an arm adds to its recipe's batches as a side stream (a manifest source, or one generator's rows).
CROSS_SOURCES: dict[str, str] = {
    "smote": "SMOTE rows decoded to images",
    "gan": "the GAN samples the gate kept",
    # one member of an ensemble gan.mode alone ("gan:mix"): its share of the kept samples
    **{member_source(m): f"the kept samples of the GAN member '{m}'" for m in GENERATORS},
}
DEFAULT_CROSS_SOURCES = ("smote", "gan")  # benchmark.cross_sources unless a config lists its own


def crossed(recipe: str, source: str) -> str:
    """The arm that adds `source` to `recipe`'s batches: "<recipe>+<source>"."""
    return f"{recipe}+{source}"


ARMS: dict[str, Arm] = {
    "real": RECIPES["real"],
    "real+classical": RECIPES["real+classical"],
    "real+trivialaugment": RECIPES["real+trivialaugment"],
    "real+balanced": Arm(("real",), "baseline", balanced=True, description="class-balanced sampling"),
    "real+classical+trivialaugment": RECIPES["real+classical+trivialaugment"],
    **{crossed(r, s): Arm((*spec.sources, s), "synthetic", augment=spec.augment, recipe=r,
                          description=f"{CROSS_SOURCES[s]} on top of '{r}'" if r != "real" else f"plus {CROSS_SOURCES[s]}")
       for s in CROSS_SOURCES for r, spec in RECIPES.items()},
    "synthetic_only": Arm(("gan",), "diagnostic",
                          description="the kept GAN samples alone (classification accuracy score)"),
}
# The arms a config trains unless it lists its own (benchmark.arms): the recipes, each source on the plain
# real images and the GAN-only diagnostic; the chosen recipe's crossed arms are added (benchmark.cross_sources).
DEFAULT_ARMS = ("real", "real+classical", "real+trivialaugment", "real+balanced", "real+classical+trivialaugment",
                "real+smote", "real+gan", "synthetic_only")


def trained_as(arm: str, classical_on_the_fly: bool) -> Arm:
    """How `arm` trains: with classical_on_the_fly (benchmark.classical_on_the_fly), an arm of the
    classical copies trains on its other sources with the classical pipeline applied on the fly to
    every image, real and synthetic alike, so real+classical+gan is classical augmentation plus GAN
    images rather than a frozen pool of copies."""
    spec = ARMS[arm]
    if not classical_on_the_fly or "classical" not in spec.sources:
        return spec
    return replace(spec, sources=tuple(s for s in spec.sources if s != "classical"), classical=True)


# Gains are reported over these arms, when configured.
GAIN_BASES = ("real", "real+classical")


def arms_of(kind: ArmKind, arms: list[str] | None = None) -> list[str]:
    """The arms of one kind, in `arms`' order (default: the registry's)."""
    return [a for a in (ARMS if arms is None else arms) if ARMS[a].kind == kind]


# --------------------------------------------------------------------------- manifest sources

SPLITS = ("train", "val", "test")  # a row's split; "excluded" marks an input ingest left out
# How a real image's split was decided (the manifest's split_origin): given by the data, or drawn
SPLIT_ORIGINS = {
    "given": "given by the data",  # train/ val/ test/ folders, a CSV split column or data.test_path
    "hash": "by content hash",  # data.split: hash
    "hash_fill": "moved to fill a class",  # the hash split gave its class no image in that split
    "seeded": "by a seeded split",  # data.split: seeded; moves when images are added
}

SOURCES = ("real", "classical", "smote", "gan")

# Why a manifest row was not kept: a code (for tables and code) beside the human message.
REASONS = {
    "duplicate": "an exact duplicate of another input image",
    "label_conflict": "the same image as another input under another label",
    "bad_image": "an input that could not be used (data.on_bad_image: skip)",
    "low_confidence": "the gate's judge did not recognise the intended class",
    "near_copy": "too close to a real training image",
    "surplus": "passed the gate, but more confident samples filled the class",
    "class_collapsed": "its class was flagged for mode collapse",
}

# --------------------------------------------------------------------------- SMOTE samplers

# Sampler name -> "module:Class"; resolved lazily so loading a config stays cheap.
SAMPLERS = {
    "SMOTE": "imblearn.over_sampling:SMOTE",
    "BorderlineSMOTE": "imblearn.over_sampling:BorderlineSMOTE",
    "SVMSMOTE": "imblearn.over_sampling:SVMSMOTE",
    "ADASYN": "imblearn.over_sampling:ADASYN",
    "KMeansSMOTE": "imblearn.over_sampling:KMeansSMOTE",
    "RandomOverSampler": "imblearn.over_sampling:RandomOverSampler",
    # over-sampling followed by cleaning (Edited Nearest Neighbours, Tomek links)
    "SMOTEENN": "imblearn.combine:SMOTEENN",
    "SMOTETomek": "imblearn.combine:SMOTETomek",
}
COMBINED_SAMPLERS = ("SMOTEENN", "SMOTETomek")

# --------------------------------------------------------------------------- feature spaces

FEATURE_SPACES: dict[str, str] = {
    "pixels": "flattened pixels (optionally PCA); SMOTE rows decode back to images",
    "cnn": "the benchmark classifier trained on the real train split; rows stay feature rows",
    "pretrained": "a torchvision backbone with weights on disk; rows stay feature rows",
    "discriminator": "the trained DCGAN discriminator; rows stay feature rows",
}
FeatureSpace = Literal[tuple(FEATURE_SPACES)]  # smote.features; an extractor says itself whether it is invertible

# --------------------------------------------------------------------------- choosing on val or by k-fold

PROTOCOLS: dict[str, str] = {  # benchmark.selection (besides auto): where the benchmark makes its choices
    "val": "on the val split",
    "kfold": "by repeated stratified k-fold over the real train+val images (a val split too small to choose on)",
}

# --------------------------------------------------------------------------- augmentation names

CLASSICAL_PRESETS = ("light", "medium", "heavy")  # classical.preset: augment.core.transforms.augmentation.PRESETS
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")  # gan.diffaugment: augment.core.gan.diffaugment.POLICIES

def generator_modes(mode: str) -> list[str]:
    """The generators of gan.mode: "per_class+mix" -> ["per_class", "mix"]; one generator -> [mode]."""
    return mode.split("+")


def check_generator_mode(mode: str) -> str:
    """gan.mode as given, or ValueError naming the generators there are."""
    members = generator_modes(mode)
    unknown = [m for m in members if m not in GENERATORS]
    if unknown or len(set(members)) != len(members):
        raise ValueError(f"gan.mode {mode!r}: choose one of {', '.join(GENERATORS)}, or several joined by '+' "
                         f"(an ensemble, each generator once), e.g. 'per_class+mix'")
    return mode


def check_members(arms: list[str], cross_sources: list[str], mode: str) -> None:
    """ValueError naming the first arm or cross source that reads a generator gan.mode does not train
    ("real+gan:mix" with gan.mode per_class)."""
    named = [(f"benchmark.arms '{a}'", ARMS[a].source) for a in arms if a in ARMS]
    named += [(f"benchmark.cross_sources '{s}'", s) for s in cross_sources]
    for where, source in named:
        member = source_member(source)[1] if source else None
        if member is not None and generator_modes(mode) == [member]:
            raise ValueError(f"{where}: gan.mode {mode!r} is one generator, so its samples are the source 'gan'; "
                             f"name that instead")
        if member is not None and member not in generator_modes(mode):
            raise ValueError(f"{where} reads the samples of generator {member!r}, which gan.mode {mode!r} does not "
                             f"train (its generators: {', '.join(generator_modes(mode))})")
