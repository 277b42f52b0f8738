"""The report: a plain verdict first, then the per-arm table, gains, data counts and config."""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from augment import manifest
from augment.benchmark import PRIMARY
from augment.config import Config, dump_config
from augment.runtime import combine, run_stage, stage_fingerprint, write_json, write_text

_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f}"


def _ci(stat: dict) -> str:
    if math.isnan(stat.get("ci_low", float("nan"))):
        return _pct(stat["mean"])
    return f"{_pct(stat['mean'])} [{_pct(stat['ci_low'])}, {_pct(stat['ci_high'])}]"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _grown(n_images: dict, arm: str) -> str:
    """' (N training images from M real)' when the arm adds images, else nothing."""
    n, real = n_images[arm], n_images["real"]
    return f" ({n} training images from {real} real)" if n != real else ""


def verdict(summary: dict, run_dir: Path | None = None) -> str:
    """One plain paragraph: what was expanded, by how much, the measured gain and whether it is significant."""
    rec = summary["recommendation"]
    arm, n_images = rec["arm"], summary["train_images"]
    metric = _NAMES[summary["primary_metric"]]
    test = summary["arms"]
    real_test = test["real"]["test"][PRIMARY]["mean"]
    seeds = rec["test_gain_over_real"]["seeds"]
    where = f" The expanded dataset is in {Path(run_dir) / 'expanded'}." if run_dir else ""
    if arm == "real" or not rec["synthetic_helps_on_val"]:
        base = rec["best_baseline"]
        lead = (
            f"No synthetic arm (SMOTE or GAN) beat '{base}' on the validation split, so the tool recommends "
            f"not using the synthetic data. "
        )
        if arm != "real":
            g = rec["test_gain_over_real"]
            lead += (
                f"'{arm}'{_grown(n_images, arm)} scored {metric} "
                f"{_pct(test[arm]['test'][PRIMARY]['mean'])} on the real test split against {_pct(real_test)} for "
                f"real images alone ({_pts(g['gain'])} points, 95% CI [{_pts(g['ci_low'])}, {_pts(g['ci_high'])}], "
                f"paired t-test p={_p(g['p_value'])}, {seeds} seeds)."
            )
        else:
            lead += f"Real images alone scored {metric} {_pct(real_test)} on the test split ({seeds} seeds)."
        return lead + where
    g, gb = rec["test_gain_over_real"], rec["test_gain_over_best_baseline"]
    significant = not math.isnan(g["p_value"]) and g["p_value"] < 0.05 and g["ci_low"] > 0
    return (
        f"Expanding {n_images['real']} real training images to {n_images[arm]} with '{arm}' (chosen on the "
        f"validation split) changed {metric} on the untouched real test split from {_pct(real_test)} to "
        f"{_pct(test[arm]['test'][PRIMARY]['mean'])}: {_pts(g['gain'])} points, 95% CI [{_pts(g['ci_low'])}, "
        f"{_pts(g['ci_high'])}], paired t-test p={_p(g['p_value'])} over {seeds} seeds, "
        f"{'a significant gain' if significant else 'not statistically significant'}. Against the best arm "
        f"without synthetic images ('{rec['best_baseline']}') the gain is {_pts(gb['gain'])} points "
        f"(p={_p(gb['p_value'])})." + where
    )


def _arm_table(summary: dict) -> str:
    lines = [
        "| arm | train images | test accuracy | test balanced accuracy | test macro-F1 | val balanced accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arm, splits in summary["arms"].items():
        t = splits["test"]
        mark = " (recommended)" if arm == summary["recommendation"]["arm"] else ""
        lines.append(
            f"| {arm}{mark} | {summary['train_images'][arm]} | {_ci(t['accuracy'])} | {_ci(t['balanced_accuracy'])} "
            f"| {_ci(t['macro_f1'])} | {_ci(splits['val']['balanced_accuracy'])} |"
        )
    return "\n".join(lines)


def _gain_table(summary: dict) -> str:
    lines = [
        "| comparison | test gain (points) [95% t CI] | bootstrap 95% CI | p (paired t) | p (Wilcoxon) | val gain (points) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, g in summary["gains"].items():
        t, v = g["test"], g["val"]
        lines.append(
            f"| {name} | {_pts(t['gain'])} [{_pts(t['ci_low'])}, {_pts(t['ci_high'])}] "
            f"| [{_pts(t['boot_low'])}, {_pts(t['boot_high'])}] | {_p(t['p_value'])} | {_p(t['wilcoxon_p'])} "
            f"| {_pts(v['gain'])} |"
        )
    return "\n".join(lines)


def _linear_table(summary: dict) -> str:
    probe = summary.get("linear_probe") or {}
    if not probe:
        return "The linear probe was off (benchmark.linear_probe)."
    lines = ["| arm | test accuracy | test balanced accuracy | val balanced accuracy |", "|---|---:|---:|---:|"]
    for arm, splits in probe.items():
        lines.append(f"| {arm} | {_pct(splits['test']['accuracy'])} | {_pct(splits['test']['balanced_accuracy'])} "
                     f"| {_pct(splits['val']['balanced_accuracy'])} |")
    return "\n".join(lines)


def _recall_table(summary: dict) -> str:
    """Per-class test recall per arm, the classes real images alone recognise worst first."""
    arms = summary["arms"]
    real = arms["real"]["test"]
    classes = sorted((m[len("recall["):-1] for m in real if m.startswith("recall[")), key=lambda c: real[f"recall[{c}]"]["mean"])
    lines = ["| class | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(_pct(arms[a]["test"][f"recall[{c}]"]["mean"]) for a in arms) + " |")
    return "\n".join(lines)


def _data_table(frame: pd.DataFrame) -> str:
    train = frame[frame["split"] == "train"]
    counts = pd.DataFrame({
        "real train": train[train["source"] == "real"].groupby("label").size(),
        "classical": train[train["source"] == "classical"].groupby("label").size(),
        "smote": train[train["source"] == "smote"].groupby("label").size(),
        "gan kept": train[(train["source"] == "gan") & train["kept"]].groupby("label").size(),
        "gan rejected": train[(train["source"] == "gan") & ~train["kept"]].groupby("label").size(),
        "val": frame[frame["split"] == "val"].groupby("label").size(),
        "test": frame[frame["split"] == "test"].groupby("label").size(),
    }).fillna(0).astype(int)
    header = "| class | " + " | ".join(counts.columns) + " |"
    lines = [header, "|---|" + "---:|" * len(counts.columns)]
    for label, row in counts.iterrows():
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _gate_summary(frame: pd.DataFrame) -> str:
    """How many generated images were kept, and why the others were not."""
    gan = frame[frame["source"] == "gan"]
    if gan.empty:
        return "No GAN samples were generated."
    why = gan.loc[~gan["kept"], "reason"].fillna("").str.extract(r"^(confidence|near-copy|surplus|class \S+ flagged)")[0]
    kinds = why.fillna("other").str.replace(r"class \S+ flagged", "class flagged (mode collapse)", regex=True)
    counts = kinds.value_counts()
    parts = ", ".join(f"{n} {k}" for k, n in counts.items())
    return f"Generated {len(gan)} images, kept {int(gan['kept'].sum())}" + (f"; not kept: {parts}." if parts else ".")


def _quality_section(cfg: Config, run_dir: Path, frame: pd.DataFrame) -> str:
    path = run_dir / "gan" / "quality.json"
    if not path.is_file():
        return "The GAN stage was disabled.\n"
    q = json.loads(path.read_text())
    lines = [
        _gate_summary(frame), "",
        f"Each sample was kept if the gate's judge gave its intended class at least {cfg.gate.min_confidence} and "
        f"its novelty (distance to the nearest real training image over the typical spacing of real images; 0 is "
        f"a copy) was at least {cfg.gate.min_novelty}; of those, the {q['target_per_class']} most confident per "
        f"class out of {q['generated_per_class']} generated. Metrics are in the judge's feature space against the "
        f"real train images of the class (k = {q['k']} for precision and recall); CAS recall is the val recall of a "
        f"classifier trained on kept samples only (overall {_pct(q['cas_accuracy_on_val'])}).", "",
        "| class | kept | Frechet distance | precision | recall | diversity | median novelty | CAS recall | alarm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, c in q["classes"].items():
        k = c["kept"]
        lines.append(
            f"| {label} | {k['n']} | {_num(k['frechet_distance'])} | {_num(k['precision'])} | {_num(k['recall'])} "
            f"| {_num(k['diversity'])} | {_num(c['median_novelty'])} | {_pct(c['cas_recall'])} | {c['alarm'] or ''} |"
        )
    history = run_dir / "gan" / "history.csv"
    if history.is_file():
        h = pd.read_csv(history)
        if {"d_acc_train", "d_acc_val"} <= set(h.columns) and h["d_acc_val"].notna().any():
            last = h[h["d_acc_val"].notna()].iloc[-1]
            lines += ["", (
                f"Discriminator overfitting signal at step {int(last['step'])}: D calls {_pct(last['d_acc_train'])} of "
                f"the training images real and {_pct(last['d_acc_val'])} of held-out real (val) images; a wide gap "
                f"means D memorised the training set (history in gan/history.csv).")]
    return "\n".join(lines) + "\n"


def _skipped_inputs(frame: pd.DataFrame, limit: int = 20) -> str:
    """The input files ingest left out (data.on_bad_image: skip, duplicates) and why."""
    skipped = frame[(frame["source"] == "real") & ~frame["kept"]]
    if skipped.empty:
        return "Every input image was used."
    lines = [f"Input images left out: {len(skipped)}.", "", "| input | class | reason |", "|---|---|---|"]
    for origin, label, reason in skipped[["generator", "label", "reason"]].head(limit).itertuples(index=False):
        lines.append(f"| {origin} | {'' if pd.isna(label) else label} | {reason} |")
    if len(skipped) > limit:
        lines.append(f"| ... {len(skipped) - limit} more in manifest.parquet | | |")
    return "\n".join(lines)


def _versions() -> str:
    names = ["torch", "torchvision", "albumentations", "imbalanced-learn", "scikit-learn", "prefect", "pandas"]
    found = []
    for n in names:
        try:
            found.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}; " + ", ".join(found)


def render_markdown(cfg: Config, run_dir: Path) -> tuple[str, str]:
    """(report markdown, verdict paragraph) from the run directory's summary and manifest."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    frame = manifest.read(run_dir)
    para = verdict(summary, run_dir)
    grids = sorted((run_dir / "gan" / "samples").glob("step_*.png"))
    gan_part = (
        f"Samples of the EMA generator after the last step, one row per class:\n\n![GAN samples](../gan/samples/{grids[-1].name})\n"
        if grids else "The GAN stage was disabled.\n"
    )
    md = f"""# Augmentation report

{para}

## Per-arm results

Mean over {cfg.benchmark.seeds} seeds with a 95% Student-t interval; every arm trains the same
classifier for {cfg.benchmark.steps} steps and is scored on the same real val and test images.
The recommended arm is chosen on val ({summary['primary_metric'].replace('_', ' ')}), never on test.

{_arm_table(summary)}

## Gains ({_NAMES[summary['primary_metric']]}, paired over seeds)

{_gain_table(summary)}

## Linear probe in the SMOTE feature space

A logistic regression on the features SMOTE interpolated in (one deterministic fit per arm):
the SMOTE arm trains on its own feature rows, every other arm on the same features of its images.

{_linear_table(summary)}

## Per-class recall on test (where a gain comes from; weakest classes first)

{_recall_table(summary)}

## Data

{_data_table(frame)}

{_skipped_inputs(frame)}

## GAN

{gan_part}
### Quality gate and sample quality

{_quality_section(cfg, run_dir, frame)}
## Config

```yaml
{dump_config(cfg).rstrip()}
```

Versions: {_versions()}.
"""
    return md, para


def report_stage(cfg: Config, run_dir: Path) -> dict:
    """Write report/report.md and report/results.json; returns the verdict paragraph."""
    run_dir = Path(run_dir)

    def body() -> dict:
        md, para = render_markdown(cfg, run_dir)
        write_text(run_dir / "report" / "report.md", md)
        summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
        write_json(run_dir / "report" / "results.json", {"verdict": para, **summary})
        return {"verdict": para}

    fp = combine(stage_fingerprint(run_dir, "benchmark"), stage_fingerprint(run_dir, "expand"), cfg.section_hash(*Config.model_fields))
    return run_stage(run_dir, "report", fp, body)
