"""The benchmark's result as a typed model: written and read through one pair of functions.

benchmark/summary.json is this model's JSON; the report, the Prefect artifacts, `augment runs`
and the history read it back through `read_summary`. Per-class recall is its own mapping
(class -> statistic), comparisons are a list of (arm, base) records: no keys built from strings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from augment.atomic import write_text

SUMMARY = Path("benchmark") / "summary.json"
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "geometric_mean")
NAN = float("nan")


class _Model(BaseModel):
    # NaN (an interval over one seed) round-trips as JSON's NaN constant, as json.dumps writes it.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class Stat(_Model):
    """Mean over seeds, standard deviation and Student-t 95% interval (NaN with one seed)."""

    mean: float
    std: float = NAN
    ci_low: float = NAN
    ci_high: float = NAN


class Gain(_Model):
    """Paired per-seed gain of one arm over another on one split."""

    gain: float
    ci_low: float
    ci_high: float
    seeds: int
    p_value: float = NAN
    wilcoxon_p: float = NAN
    boot_low: float = NAN
    boot_high: float = NAN
    per_seed: list[float] = Field(default_factory=list)  # the paired differences the interval is over

    @property
    def significant(self) -> bool:
        """p < 0.05 with an interval that excludes zero."""
        return not math.isnan(self.p_value) and self.p_value < 0.05 and (self.ci_low > 0 or self.ci_high < 0)


class SplitResult(_Model):
    metrics: dict[str, Stat]  # metric name (METRICS) -> statistic
    recall: dict[str, Stat] = Field(default_factory=dict)  # class -> recall statistic


class ArmResult(_Model):
    train_images: int
    val: SplitResult
    test: SplitResult

    def split(self, name: str) -> SplitResult:
        return self.val if name == "val" else self.test


class Comparison(_Model):
    """One arm against a base arm, paired over seeds, on val and on test."""

    arm: str
    base: str
    val: Gain
    test: Gain


class Recommendation(_Model):
    arm: str
    chosen_on: str = "val"
    rule: str
    best_baseline: str
    best_synthetic: str | None
    synthetic_val_gain_over_best_baseline: Gain | None
    synthetic_helps_on_val: bool
    test_gain_over_real: Gain
    test_gain_over_best_baseline: Gain
    synthetic_test_gain_over_best_baseline: Gain | None


class SideStreamChoice(_Model):
    """How one arm fed its synthetic images: the share of every batch (chosen on val or set in
    the config), the val score per share tried, the loss weight and soft labels."""

    share: float
    chosen_on: str  # "val" or "kfold" (benchmark.synthetic_share: auto), or "config"
    # share -> primary metric on val (with the selection seed) or on the held-out folds (mean over seeds)
    val: dict[str, float] = Field(default_factory=dict)
    weight: float = 1.0
    soft_labels: bool = False
    temperature: float = 2.0


class Crossing(_Model):
    """The benchmark's two steps (issue 33): (a) the recipe chosen among the recipe arms on val (or by
    k-fold), (b) that recipe with each synthetic source added; and the same sources on the plain real arm."""

    recipe: str
    chosen_on: str  # "val" or "kfold"
    val: dict[str, float]  # recipe arm -> the primary metric on val that the choice read
    arms: dict[str, str] = Field(default_factory=dict)  # source -> the arm adding it to the recipe
    best: str | None = None  # the crossed arm best on val
    val_gain: Gain | None = None  # best over the recipe, on val
    test_gain: Gain | None = None  # best over the recipe, on test
    plain_best: str | None = None  # the best on val of the sources on the plain real arm (real+<source>)
    plain_val_gain: Gain | None = None
    plain_test_gain: Gain | None = None


class Selection(_Model):
    """Where the benchmark chose (augment.core.bench.selection): "val", or "kfold" over real train+val."""

    protocol: str = "val"
    reason: str = ""
    folds: int | None = None  # k: seed s held out fold s % k of repeat s // k
    val_per_class: int | None = None  # the smallest class's real val images


class HeldOut(_Model):
    images: int
    ids_sha256: str


class Summary(_Model):
    primary_metric: str
    arms: dict[str, ArmResult]  # in the configured order
    comparisons: list[Comparison]
    recommendation: Recommendation
    linear_probe: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)  # arm -> split -> metric
    held_out: dict[str, HeldOut] = Field(default_factory=dict)
    skipped_arms: list[str] = Field(default_factory=list)
    # arm -> test confusion matrix summed over seeds: rows are true classes, columns predicted (classes' order)
    confusion_test: dict[str, list[list[int]]] = Field(default_factory=dict)
    side_stream: dict[str, SideStreamChoice] = Field(default_factory=dict)  # arm -> how it fed synthetic images
    classifier_steps: int | None = None  # every arm's step budget (benchmark.steps, or auto)
    balanced_sampling: bool = False  # every arm drew classes equally often (benchmark.balanced_sampling)
    selection: Selection = Field(default_factory=Selection)
    augment_on: str | None = None  # where on-the-fly augmentation ran (benchmark.augment_on): "device" or "cpu"
    models_per_round: int | None = None  # classifiers trained as one stacked network (benchmark.models_per_round)
    crossing: Crossing | None = None  # the chosen recipe crossed with every synthetic source (benchmark.cross_sources)

    def comparison(self, arm: str, base: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.arm == arm and c.base == base), None)

    def mean(self, arm: str, split: str = "test", metric: str | None = None) -> float:
        return self.arms[arm].split(split).metrics[metric or self.primary_metric].mean

    @property
    def classes(self) -> list[str]:
        return list(self.arms["real"].test.recall)

    @property
    def train_images(self) -> dict[str, int]:
        return {arm: r.train_images for arm, r in self.arms.items()}


def write_summary(run_dir: Path, summary: Summary) -> None:
    write_text(Path(run_dir) / SUMMARY, summary.model_dump_json(indent=2) + "\n")


def read_summary(run_dir: Path) -> Summary:
    return Summary.model_validate_json((Path(run_dir) / SUMMARY).read_text())


def summary_from_json(data: dict) -> Summary:
    """A Summary from its JSON (as results.json and history/ hold it); also reads the untyped
    summary.json of runs made before the typed model (keys "X vs Y" and "recall[c]")."""
    if "comparisons" in data:
        return Summary.model_validate({k: v for k, v in data.items() if k in Summary.model_fields})
    arms = {}
    for arm, splits in data["arms"].items():
        parts = {}
        for split in ("val", "test"):
            stats = splits[split]
            parts[split] = {"metrics": {m: s for m, s in stats.items() if not m.startswith("recall[")},
                            "recall": {m[len("recall["):-1]: s for m, s in stats.items() if m.startswith("recall[")}}
        arms[arm] = {"train_images": data.get("train_images", {}).get(arm, 0), **parts}
    comparisons = [{"arm": name.split(" vs ")[0], "base": name.split(" vs ")[1], **g}
                   for name, g in data.get("gains", {}).items()]
    return Summary.model_validate({
        "primary_metric": data["primary_metric"], "arms": arms, "comparisons": comparisons,
        "recommendation": data["recommendation"], "linear_probe": data.get("linear_probe") or {},
        "held_out": data.get("held_out") or {}, "skipped_arms": data.get("skipped_arms") or [],
    })


def summary_json(summary: Summary) -> dict:
    """The summary as plain JSON data (NaN kept as float NaN)."""
    return json.loads(summary.model_dump_json())
