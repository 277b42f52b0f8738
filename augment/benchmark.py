"""Benchmark: the same classifier and step budget per arm and seed, scored on untouched real val/test."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from imblearn.metrics import geometric_mean_score
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from augment import manifest
from augment.classifier import predict_proba, train_classifier
from augment.config import Config
from augment.data import ingest_info, load_split
from augment.features import make_extractor
from augment.smote import gan_source
from augment.runtime import atomic_path, combine, derive_seed, resolve_device, run_stage, stage_fingerprint, write_json

log = logging.getLogger("augment")


@dataclass(frozen=True)
class Arm:
    """What one arm trains on: manifest sources, plus how batches are drawn."""

    sources: tuple[str, ...]
    augment: str | None = None  # on-the-fly augmentation (torchvision)
    balanced: bool = False  # class-balanced sampling


ARMS = {
    "real": Arm(("real",)),
    "real+classical": Arm(("real", "classical")),
    "real+trivialaugment": Arm(("real",), augment="trivialaugment"),
    "real+balanced": Arm(("real",), balanced=True),
    "real+classical+trivialaugment": Arm(("real", "classical"), augment="trivialaugment"),
    "real+smote": Arm(("real", "smote")),
    "real+gan": Arm(("real", "gan")),
    "real+classical+gan": Arm(("real", "classical", "gan")),
    "synthetic_only": Arm(("gan",)),
}
# Arms without generated images: a synthetic arm must beat the best of these to be recommended.
BASELINE_ARMS = ("real", "real+classical", "real+trivialaugment", "real+balanced", "real+classical+trivialaugment")
SYNTHETIC_ARMS = ("real+smote", "real+gan", "real+classical+gan")
GAIN_BASES = ("real", "real+classical")
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "geometric_mean")
PRIMARY = "balanced_accuracy"
SIGNIFICANCE = 0.05


def score(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Headline metrics plus per-class recall (as `recall[<class>]`)."""
    labels = np.arange(len(classes))
    out = {
        "accuracy": accuracy_score(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "geometric_mean": geometric_mean_score(y_true, y_pred, labels=labels, average="multiclass"),
    }
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out.update({f"recall[{c}]": float(r) for c, r in zip(classes, recalls)})
    return out


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, standard deviation and Student-t confidence interval of per-seed values."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(values.std(ddof=1))
    lo, hi = stats.t.interval(level, len(values) - 1, loc=mean, scale=stats.sem(values)) if sd > 0 else (mean, mean)
    return mean, sd, float(lo), float(hi)


def paired_gain(arm: np.ndarray, base: np.ndarray, level: float = 0.95, seed: int = 0) -> dict:
    """Mean per-seed gain of arm over base with a t interval, a bootstrap interval, paired t and Wilcoxon p.

    The decision uses the paired t-test: with 5 seeds a two-sided Wilcoxon test cannot go below
    p = 0.0625, so it is reported, not used to decide.
    """
    arm, base = np.asarray(arm, float), np.asarray(base, float)
    diff = arm - base
    mean, _, lo, hi = mean_ci(diff, level)
    out = {"gain": mean, "ci_low": lo, "ci_high": hi, "seeds": int(len(diff)),
           "p_value": float("nan"), "wilcoxon_p": float("nan"), "boot_low": float("nan"), "boot_high": float("nan")}
    if len(diff) < 2:
        return out
    if np.ptp(diff) == 0:  # no spread: the t statistic is 0/0 or x/0, the bootstrap degenerate
        p = 1.0 if diff[0] == 0 else 0.0
        return {**out, "p_value": p, "wilcoxon_p": p, "boot_low": mean, "boot_high": mean}
    boot = stats.bootstrap((diff,), np.mean, confidence_level=level, n_resamples=9999, method="percentile",
                           random_state=np.random.default_rng(seed))
    return {
        **out,
        "p_value": float(stats.ttest_rel(arm, base).pvalue),
        "wilcoxon_p": float(stats.wilcoxon(arm, base).pvalue) if np.any(diff != 0) else 1.0,
        "boot_low": float(boot.confidence_interval.low),
        "boot_high": float(boot.confidence_interval.high),
    }


def summarise(results: pd.DataFrame, arms: list[str]) -> dict:
    """Per-arm mean and CI per split and metric; gains over real and real+classical; the recommendation."""
    summary: dict = {"arms": {}, "gains": {}, "primary_metric": PRIMARY}
    for (arm, split, metric), group in results.groupby(["arm", "split", "metric"]):
        mean, sd, lo, hi = mean_ci(group.sort_values("seed")["value"].to_numpy())
        summary["arms"].setdefault(arm, {}).setdefault(split, {})[metric] = {
            "mean": mean, "std": sd, "ci_low": lo, "ci_high": hi}
    summary["arms"] = {a: summary["arms"][a] for a in arms}  # the configured order

    def per_seed(arm: str, split: str) -> np.ndarray:
        sel = results[(results["arm"] == arm) & (results["split"] == split) & (results["metric"] == PRIMARY)]
        return sel.sort_values("seed")["value"].to_numpy()

    def gain(arm: str, base: str, split: str) -> dict:
        return paired_gain(per_seed(arm, split), per_seed(base, split))

    for base in [a for a in GAIN_BASES if a in arms]:
        for arm in arms:
            if arm != base and not (base != "real" and arm == "real"):
                summary["gains"][f"{arm} vs {base}"] = {split: gain(arm, base, split) for split in ("val", "test")}

    def val_mean(arm: str) -> float:
        return summary["arms"][arm]["val"][PRIMARY]["mean"]

    best_baseline = max((a for a in arms if a in BASELINE_ARMS), key=val_mean)
    synthetic = [a for a in arms if a in SYNTHETIC_ARMS]
    best_synthetic = max(synthetic, key=val_mean) if synthetic else None
    # A synthetic arm is recommended only if it beats the best arm without generated images on
    # val by a margin the seeds support (paired t-test), never on test and never on a tie.
    val_gain = gain(best_synthetic, best_baseline, "val") if synthetic else None
    helps = bool(val_gain and val_gain["gain"] > 0 and val_gain["p_value"] < SIGNIFICANCE)
    best = best_synthetic if helps else best_baseline
    summary["recommendation"] = {
        "arm": best,
        "chosen_on": "val",
        "rule": f"best synthetic arm if its paired val gain over the best baseline is > 0 with p < {SIGNIFICANCE}",
        "best_baseline": best_baseline,
        "best_synthetic": best_synthetic,
        "synthetic_val_gain_over_best_baseline": val_gain,
        "synthetic_helps_on_val": helps,
        "test_gain_over_real": gain(best, "real", "test"),
        "test_gain_over_best_baseline": gain(best, best_baseline, "test"),
        "synthetic_test_gain_over_best_baseline": gain(best_synthetic, best_baseline, "test") if synthetic else None,
    }
    return summary


def ids_digest(ids) -> str:
    """A digest of a set of manifest ids (to show every arm was scored on the same images)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def benchmark_fingerprint(cfg: Config, run_dir: Path) -> str:
    upstream = [stage_fingerprint(run_dir, s) for s in ("ingest", "classical", "smote", "synthesize")]
    return combine(*upstream, cfg.section_hash("seed", "device", "benchmark"))


def linear_probe(cfg: Config, run_dir: Path, arms: list[str], held_out: dict, classes: list[str]) -> list[dict]:
    """Logistic regression in the SMOTE stage's feature space, one deterministic fit per arm.

    The SMOTE arm trains on its feature rows themselves (SMOTE's native output); every other arm
    on the same features of its images, so the comparison is fair. Arms that only change how
    batches are drawn on the fly (TrivialAugmentWide) have no fixed rows and are left out.
    """
    from sklearn.linear_model import LogisticRegression

    x_real, y_real, _ = load_split(run_dir, "train")
    # the same extractor, fitted on the same images with the same seed, as the SMOTE stage's
    extractor = make_extractor(cfg.smote, derive_seed(cfg.seed, "smote"), cfg.benchmark.trainer_kwargs(),
                               gan_source(cfg, run_dir))
    extractor.fit(x_real, y_real, len(classes))
    records = []
    for arm in arms:
        spec = ARMS[arm]
        if spec.augment:
            continue
        x, y, _ = load_split(run_dir, "train", tuple(s for s in spec.sources if s != "smote"))
        feats = extractor.transform(x)
        if "smote" in spec.sources:
            with np.load(run_dir / "features" / "smote.npz") as rows:
                feats, y = np.concatenate([feats, rows["x"]]), np.concatenate([y, rows["y"]])
        clf = LogisticRegression(max_iter=1000, class_weight="balanced" if spec.balanced else None).fit(feats, y)
        for split, (xs, ys) in held_out.items():
            for metric, value in score(ys, clf.predict(extractor.transform(xs)), classes).items():
                records.append(dict(arm=arm, seed=0, split=split, metric=metric, value=float(value), classifier="linear"))
    return records


def benchmark_stage(cfg: Config, run_dir: Path) -> dict:
    """Train the classifier per arm and seed; write benchmark/results.parquet and summary.json."""
    run_dir = Path(run_dir)

    def body() -> dict:
        info = ingest_info(run_dir)
        k = len(info["classes"])
        device = resolve_device(cfg.device)
        b = cfg.benchmark
        loaded = {s: load_split(run_dir, s) for s in ("val", "test")}  # real images only, once for all arms
        held_out = {s: (xs, ys) for s, (xs, ys, _) in loaded.items()}
        frame = manifest.read(run_dir)
        # a source without images (SMOTE rows in a non-invertible feature space) has no CNN arm
        kept_sources = set(frame.loc[frame["kept"] & (frame["split"] == "train") & frame["path"].notna(), "source"])
        arms = [a for a in b.arms if set(ARMS[a].sources) <= kept_sources]
        skipped = sorted(set(b.arms) - set(arms))
        if skipped:
            log.warning("benchmark: arm(s) %s skipped, their stage produced no images", skipped)
        records, train_images = [], {}
        for arm in arms:
            spec = ARMS[arm]
            x, y, _ = load_split(run_dir, "train", spec.sources)
            train_images[arm] = len(x)
            for s in range(b.seeds):
                # the same seed for every arm: paired runs share initialisation
                model = train_classifier(x, y, k, **b.trainer_kwargs(), seed=derive_seed(cfg.seed, "benchmark", s),
                                         device=device, augment=spec.augment, balanced=spec.balanced)
                for split, (xs, ys) in held_out.items():
                    for metric, value in score(ys, predict_proba(model, xs).argmax(1), info["classes"]).items():
                        records.append(dict(arm=arm, seed=s, split=split, metric=metric, value=float(value),
                                            classifier=b.classifier))
            log.info("benchmark: arm %s done (%d train images)", arm, len(x))
        if b.linear_probe:
            # SMOTE rows without images (classifier feature spaces) are still scored here, natively
            has_rows = "smote" in set(frame.loc[frame["kept"], "source"])
            probe_arms = arms + [a for a in b.arms if a not in arms and set(ARMS[a].sources) == {"real", "smote"} and has_rows]
            records += linear_probe(cfg, run_dir, probe_arms, held_out, info["classes"])
        results = pd.DataFrame(records)
        with atomic_path(run_dir / "benchmark" / "results.parquet") as tmp:
            results.to_parquet(tmp, index=False)
        summary = summarise(results[results["classifier"] == b.classifier], arms)
        linear = results[(results["classifier"] == "linear") & results["metric"].isin(METRICS)]
        summary["linear_probe"] = {
            arm: {split: dict(zip(g["metric"], g["value"])) for split, g in by_arm.groupby("split")}
            for arm, by_arm in linear.groupby("arm", sort=False)
        }
        summary["train_images"] = train_images
        summary["held_out"] = {s: {"images": len(rows), "ids_sha256": ids_digest(rows["id"])} for s, (_, _, rows) in loaded.items()}
        summary["skipped_arms"] = skipped
        write_json(run_dir / "benchmark" / "summary.json", summary)
        return {"arms": arms, "recommended": summary["recommendation"]["arm"]}

    return run_stage(run_dir, "benchmark", benchmark_fingerprint(cfg, run_dir), body)
