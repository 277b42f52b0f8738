"""Benchmark statistics: per-seed scores, means with intervals, paired gains, the val-only recommendation."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from imblearn.metrics import geometric_mean_score
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from augment.registry import ARMS, GAIN_BASES, arms_of, crossed
from augment.summary import METRICS, Comparison, Crossing, Gain, Recommendation, Stat, Summary

PRIMARY = "balanced_accuracy"
SIGNIFICANCE = 0.05


def score(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Headline metrics (METRICS) plus "recall": {class: recall}."""
    labels = np.arange(len(classes))
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "geometric_mean": float(geometric_mean_score(y_true, y_pred, labels=labels, average="multiclass")),
        "recall": {c: float(r) for c, r in zip(classes, recalls)},
    }


def score_records(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], **key) -> list[dict]:
    """score() as rows of the long results table: key columns + metric, class (recall only), value."""
    s = score(y_true, y_pred, classes)
    rows = [dict(key, metric=m, value=s[m]) for m in METRICS]
    return rows + [dict(key, metric="recall", **{"class": c}, value=v) for c, v in s["recall"].items()]


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, standard deviation and Student-t confidence interval of per-seed values."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(values.std(ddof=1))
    lo, hi = stats.t.interval(level, len(values) - 1, loc=mean, scale=stats.sem(values)) if sd > 0 else (mean, mean)
    return mean, sd, float(lo), float(hi)


def paired_gain(arm: np.ndarray, base: np.ndarray, level: float = 0.95, seed: int = 0) -> Gain:
    """Mean per-seed gain of arm over base with a t interval, a bootstrap interval, paired t and Wilcoxon p.

    The decision uses the paired t-test: with 5 seeds a two-sided Wilcoxon test cannot go below
    p = 0.0625, so it is reported, not used to decide.
    """
    arm, base = np.asarray(arm, float), np.asarray(base, float)
    diff = arm - base
    mean, _, lo, hi = mean_ci(diff, level)
    out = Gain(gain=mean, ci_low=lo, ci_high=hi, seeds=len(diff), per_seed=diff.tolist())
    if len(diff) < 2:
        return out
    if np.ptp(diff) == 0:  # no spread: the t statistic is 0/0 or x/0, the bootstrap degenerate
        p = 1.0 if diff[0] == 0 else 0.0
        return out.model_copy(update=dict(p_value=p, wilcoxon_p=p, boot_low=mean, boot_high=mean))
    boot = stats.bootstrap((diff,), np.mean, confidence_level=level, n_resamples=9999, method="percentile",
                           random_state=np.random.default_rng(seed))
    return out.model_copy(update=dict(
        p_value=float(stats.ttest_rel(arm, base).pvalue),
        wilcoxon_p=float(stats.wilcoxon(arm, base).pvalue) if np.any(diff != 0) else 1.0,
        boot_low=float(boot.confidence_interval.low),
        boot_high=float(boot.confidence_interval.high),
    ))


def _stat(values: np.ndarray) -> Stat:
    mean, sd, lo, hi = mean_ci(values)
    return Stat(mean=mean, std=sd, ci_low=lo, ci_high=hi)


class _Scores:
    """The long results table read per arm: per-seed primary scores, paired gains, val means."""

    def __init__(self, results: pd.DataFrame, per_arm: dict):
        self.results, self.per_arm = results, per_arm

    def per_seed(self, arm: str, split: str) -> np.ndarray:
        r = self.results
        sel = r[(r["arm"] == arm) & (r["split"] == split) & (r["metric"] == PRIMARY)]
        return sel.sort_values("seed")["value"].to_numpy()

    def gain(self, arm: str, base: str, split: str) -> Gain:
        return paired_gain(self.per_seed(arm, split), self.per_seed(base, split))

    def val_mean(self, arm: str) -> float:
        return self.per_arm[arm]["val"]["metrics"][PRIMARY].mean

    def best_over(self, candidates: list[str], base: str) -> tuple[str | None, Gain | None, Gain | None]:
        """The candidate best on val, and its val and test gains over `base`."""
        if not candidates:
            return None, None, None
        best = max(candidates, key=self.val_mean)
        return best, self.gain(best, base, "val"), self.gain(best, base, "test")


def _per_arm(results: pd.DataFrame, arms: list[str], train_images: dict[str, int] | None) -> dict:
    """Each arm's train image count and, per split, its metrics' and per-class recalls' Stats."""
    per_arm: dict = {}
    for arm in arms:
        mine = results[results["arm"] == arm]
        per_arm[arm] = {"train_images": (train_images or {}).get(arm, 0)}
        for split in ("val", "test"):
            rows = mine[mine["split"] == split].sort_values("seed")
            metrics = {m: _stat(g["value"].to_numpy()) for m, g in rows[rows["metric"] != "recall"].groupby("metric")}
            recall = {c: _stat(g["value"].to_numpy())
                      for c, g in rows[rows["metric"] == "recall"].groupby("class", sort=False)}
            per_arm[arm][split] = {"metrics": metrics, "recall": recall}
    return per_arm


def _recommend(scores: _Scores, arms: list[str]) -> Recommendation:
    """A synthetic arm is recommended only if it beats the best arm without generated images on
    val by a margin the seeds support (paired t-test), never on test and never on a tie."""
    best_baseline = max(arms_of("baseline", arms), key=scores.val_mean)
    synthetic = arms_of("synthetic", arms)
    best_synthetic = max(synthetic, key=scores.val_mean) if synthetic else None
    val_gain = scores.gain(best_synthetic, best_baseline, "val") if synthetic else None
    helps = bool(val_gain and val_gain.gain > 0 and val_gain.p_value < SIGNIFICANCE)
    best = best_synthetic if helps else best_baseline
    return Recommendation(
        arm=best,
        rule=f"best synthetic arm if its paired val gain over the best baseline is > 0 with p < {SIGNIFICANCE}",
        best_baseline=best_baseline,
        best_synthetic=best_synthetic,
        synthetic_val_gain_over_best_baseline=val_gain,
        synthetic_helps_on_val=helps,
        test_gain_over_real=scores.gain(best, "real", "test"),
        test_gain_over_best_baseline=scores.gain(best, best_baseline, "test"),
        synthetic_test_gain_over_best_baseline=scores.gain(best_synthetic, best_baseline, "test") if synthetic else None,
    )


def _crossing(scores: _Scores, arms: list[str], recipe: str, on_recipe: list[str], cross: list[str]) -> Crossing:
    """Step (b): the source best on val over the chosen recipe, and the same over plain real."""
    best, val_g, test_g = scores.best_over(on_recipe, recipe)
    plain_best, plain_val, plain_test = scores.best_over(
        [crossed("real", s) for s in cross if crossed("real", s) in arms], "real")
    return Crossing(recipe=recipe, chosen_on="val", val={a: scores.val_mean(a) for a in arms if ARMS[a].recipe == a},
                    arms={ARMS[a].source: a for a in on_recipe}, best=best, val_gain=val_g, test_gain=test_g,
                    plain_best=plain_best, plain_val_gain=plain_val, plain_test_gain=plain_test)


def summarise(results: pd.DataFrame, arms: list[str], train_images: dict[str, int] | None = None,
              recipe: str | None = None, cross: list[str] = ()) -> Summary:
    """Per-arm means and intervals per split; gains over real, real+classical and the chosen `recipe`;
    the recommendation; with a recipe, its crossing with the sources `cross` (summary.Crossing).

    `results`: the long table (arm, seed, split, metric, value, and class for metric "recall").
    """
    kinds = ("baseline", "synthetic", "diagnostic")  # the report's order: baselines, then synthetic arms
    arms = sorted(arms, key=lambda a: kinds.index(ARMS[a].kind))  # stable: as configured within a kind
    results = results.copy()
    if "class" not in results:
        results["class"] = None
    scores = _Scores(results, _per_arm(results, arms, train_images))
    gain = scores.gain
    comparisons = [Comparison(arm=arm, base=base, val=gain(arm, base, "val"), test=gain(arm, base, "test"))
                   for base in GAIN_BASES if base in arms
                   for arm in arms if arm != base and not (base != "real" and arm == "real")]
    on_recipe = [crossed(recipe, s) for s in cross if crossed(recipe, s) in arms] if recipe else []
    if recipe is not None and recipe not in GAIN_BASES:  # step (b)'s arms over the recipe they add to
        comparisons += [Comparison(arm=a, base=recipe, val=gain(a, recipe, "val"), test=gain(a, recipe, "test"))
                        for a in on_recipe]
    crossing = _crossing(scores, arms, recipe, on_recipe, cross) if recipe is not None else None
    return Summary.model_validate({"primary_metric": PRIMARY, "arms": scores.per_arm, "comparisons": comparisons,
                                   "recommendation": _recommend(scores, arms), "crossing": crossing})


def ids_digest(ids) -> str:
    """A digest of a set of manifest ids (to show every arm was scored on the same images)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def linear_probe_scores(train: dict[str, tuple[np.ndarray, np.ndarray, bool]], held_out: dict[str, tuple],
                        classes: list[str]) -> list[dict]:
    """Logistic regression per arm on fixed feature rows; long-table rows like the CNN arms'.

    train: arm -> (features, labels, class-balanced?); held_out: split -> (features, labels).
    """
    from sklearn.linear_model import LogisticRegression

    records = []
    for arm, (feats, y, balanced) in train.items():
        clf = LogisticRegression(max_iter=1000, class_weight="balanced" if balanced else None).fit(feats, y)
        for split, (xs, ys) in held_out.items():
            records += score_records(ys, clf.predict(xs), classes, arm=arm, seed=0, split=split, classifier="linear")
    return records
