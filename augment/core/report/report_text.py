"""The report's words and tables: a plain verdict first, then the per-arm table, gains, data counts and config.

Pure: it takes the typed Summary, the manifest frame and what the stages recorded, and returns
Markdown or HTML text. augment.stages.report reads the run directory and writes the files.
"""

from __future__ import annotations

import math
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from augment.config import Config
from augment.config_file import dump_config
from augment.core.report.numbers import pct
from augment.core.report.report_data import data_table, skipped_inputs, split_text
from augment.core.report.report_gan import quality_section
from augment.safe_text import fence, md
from augment.summary import Gain, Stat, Summary

METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def _pts(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f}"


def _ci(stat: Stat) -> str:
    if math.isnan(stat.ci_low):
        return pct(stat.mean)
    return f"{pct(stat.mean)} [{pct(stat.ci_low)}, {pct(stat.ci_high)}]"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _grown(n_images: dict, arm: str) -> str:
    """' (N training images from M real)' when the arm adds images, else nothing."""
    n, real = n_images[arm], n_images["real"]
    return f" ({n} training images from {real} real)" if n != real else ""


def _significance(g: Gain) -> str:
    """'a significant gain' / 'a significant loss' / 'not statistically significant' (p < 0.05, CI excludes 0)."""
    if not g.significant:
        return "not statistically significant"
    return "a significant gain" if g.ci_low > 0 else "a significant loss"


def _where(rec) -> str:
    """Where the recommendation was chosen, in words."""
    return "the k-fold cross-validation over train and val" if rec.chosen_on == "kfold" else "the validation split"


def _no_synthetic_gain(rec) -> str:
    """Why no synthetic arm is recommended, in words that follow the numbers: below the best
    baseline on val, or above it without significance ("did not significantly beat")."""
    base, best, g = rec.best_baseline, rec.best_synthetic, rec.synthetic_val_gain_over_best_baseline
    if best is None or g is None:
        return "No synthetic arm (SMOTE or GAN) was benchmarked, so there is no synthetic data to recommend."
    if g.gain > 0:
        return (f"The best synthetic arm, '{best}', scored {_pts(g.gain)} points above '{base}' on {_where(rec)} "
                f"but did not significantly beat it (paired t-test p={_p(g.p_value)} over {g.seeds} seeds), "
                "so the tool recommends not using the synthetic data.")
    return (f"No synthetic arm (SMOTE or GAN) scored above '{base}' on {_where(rec)} (the best, '{best}', "
            f"{_pts(g.gain)} points), so the tool recommends not using the synthetic data.")


def _changed(arm: str, g: Gain, what: str = "it") -> str:
    """"'arm' changed <what> by +x points (95% CI [lo, hi], p=...: significance)"."""
    return (f"'{arm}', changed {what} by {_pts(g.gain)} points (95% CI [{_pts(g.ci_low)}, {_pts(g.ci_high)}], paired t-test "
            f"p={_p(g.p_value)}: {_significance(g)})")


def crossing_text(summary: Summary) -> str:
    """One sentence: on top of the recipe chosen on val, did a synthetic source help on test, by how much;
    and the same on the plain real images (summary.Crossing). Empty without step (b)."""
    c = summary.crossing
    if c is None:
        return ""
    metric = METRIC_NAMES[summary.primary_metric]
    where = "k-fold" if c.chosen_on == "kfold" else "val"
    if c.best is None or c.test_gain is None:
        return f" No synthetic source had images to add to '{c.recipe}', the recipe chosen on {where}."
    head = (f" What the generated images add: on top of '{c.recipe}', the best of {len(c.val)} recipes on {where}, "
            f"the source best on {where}, "
            f"{_changed(c.best, c.test_gain, f'test {metric}')}")
    if c.recipe == "real" or c.plain_best is None or c.plain_test_gain is None:
        return head + "."
    return head + f"; on the plain real images the best, {_changed(c.plain_best, c.plain_test_gain)}."


def verdict(summary: Summary, run_dir: Path | None = None, path_text=str) -> str:
    """One plain paragraph: what was expanded, by how much, the measured gain and whether it is significant.
    path_text formats the run directory's path (safe_text.md for Markdown)."""
    rec = summary.recommendation
    arm, n_images = rec.arm, summary.train_images
    metric = METRIC_NAMES[summary.primary_metric]
    real_test = summary.mean("real")
    seeds = rec.test_gain_over_real.seeds
    where = f" The expanded dataset is in {path_text(Path(run_dir) / 'expanded')}." if run_dir else ""
    if arm == "real" or not rec.synthetic_helps_on_val:
        lead = _no_synthetic_gain(rec) + " "
        if arm != "real":
            g = rec.test_gain_over_real
            lead += (
                f"'{arm}'{_grown(n_images, arm)} scored {metric} "
                f"{pct(summary.mean(arm))} on the real test split against {pct(real_test)} for "
                f"real images alone ({_pts(g.gain)} points, 95% CI [{_pts(g.ci_low)}, {_pts(g.ci_high)}], "
                f"paired t-test p={_p(g.p_value)} over {seeds} seeds: {_significance(g)})."
            )
        else:
            lead += f"Real images alone scored {metric} {pct(real_test)} on the test split ({seeds} seeds)."
        return lead + crossing_text(summary) + where
    g, gb = rec.test_gain_over_real, rec.test_gain_over_best_baseline
    return (
        f"Expanding {n_images['real']} real training images to {n_images[arm]} with '{arm}' (chosen on "
        f"{_where(rec)}) changed {metric} on the untouched real test split from {pct(real_test)} to "
        f"{pct(summary.mean(arm))}: {_pts(g.gain)} points, 95% CI [{_pts(g.ci_low)}, "
        f"{_pts(g.ci_high)}], paired t-test p={_p(g.p_value)} over {seeds} seeds, "
        f"{_significance(g)}. Against the best arm "
        f"without synthetic images ('{rec.best_baseline}') the gain is {_pts(gb.gain)} points "
        f"(p={_p(gb.p_value)})." + crossing_text(summary) + where
    )


def chosen_on(summary: Summary) -> str:
    """What the "val" figures are: the val split, or the held-out folds of the k-fold protocol."""
    return "k-fold" if summary.selection.protocol == "kfold" else "val"


def protocol_text(summary: Summary) -> str:
    """Where the choices were made (augment.core.bench.selection), in words."""
    metric = summary.primary_metric.replace("_", " ")
    if summary.selection.protocol != "kfold":
        return f"The recommended arm is chosen on val ({metric}), never on test."
    sel = summary.selection
    return (f"Val is too small to choose on ({sel.reason}), so every choice (the synthetic share, the recommended arm) "
            f"is made by repeated stratified {sel.folds}-fold cross-validation over the real train and val images "
            f"({metric}), never on test: each seed trains on the images outside its fold, without the classical copies "
            f"and SMOTE images made from the images inside it, and is scored on its fold (the \"k-fold\" figures below); "
            f"its test figures come from the same model. GAN samples come from a generator trained on every real train "
            f"image, so a GAN arm's fold scores may be optimistic.")


def _arm_table(summary: Summary) -> str:
    lines = [
        f"| arm | train images | test accuracy | test balanced accuracy | test macro-F1 | {chosen_on(summary)} balanced accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arm, result in summary.arms.items():
        t = result.test.metrics
        mark = " (recommended)" if arm == summary.recommendation.arm else ""
        lines.append(
            f"| {arm}{mark} | {result.train_images} | {_ci(t['accuracy'])} | {_ci(t['balanced_accuracy'])} "
            f"| {_ci(t['macro_f1'])} | {_ci(result.val.metrics['balanced_accuracy'])} |"
        )
    return "\n".join(lines)


def _side_stream_text(summary: Summary) -> str:
    """How each arm with synthetic images fed them: the share of every batch, and how it was chosen."""
    if not summary.side_stream:
        return ""
    rows = [f"| {arm} | {c.share:.0%} | {'on ' + chosen_on(summary) + ': ' + ', '.join(f'{float(g):.0%} {pct(v)}' for g, v in c.val.items()) if c.val else 'config'} "
            f"| {c.weight:g} | {'T = %g' % c.temperature if c.soft_labels else 'no'} |" for arm, c in summary.side_stream.items()]
    return ("\nSynthetic images (classical copies, SMOTE images, GAN samples) enter as a side stream: a fixed share of "
            "every batch, the rest real images.\n\n| arm | share of each batch | chosen | loss weight | soft labels |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def _gain_table(summary: Summary) -> str:
    lines = [
        f"| comparison | test gain (points) [95% t CI] | bootstrap 95% CI | p (paired t) | p (Wilcoxon) | {chosen_on(summary)} gain (points) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in summary.comparisons:
        t, v = c.test, c.val
        lines.append(
            f"| {c.arm} vs {c.base} | {_pts(t.gain)} [{_pts(t.ci_low)}, {_pts(t.ci_high)}] "
            f"| [{_pts(t.boot_low)}, {_pts(t.boot_high)}] | {_p(t.p_value)} | {_p(t.wilcoxon_p)} "
            f"| {_pts(v.gain)} |"
        )
    return "\n".join(lines)


def _linear_table(summary: Summary) -> str:
    probe = summary.linear_probe
    if not probe:
        return "The linear probe was off (benchmark.linear_probe)."
    lines = ["| arm | test accuracy | test balanced accuracy | val balanced accuracy |", "|---|---:|---:|---:|"]
    for arm, splits in probe.items():
        lines.append(f"| {arm} | {pct(splits['test']['accuracy'])} | {pct(splits['test']['balanced_accuracy'])} "
                     f"| {pct(splits['val']['balanced_accuracy'])} |")
    return "\n".join(lines)


def class_order(summary: Summary, train_counts: dict[str, int] | None = None) -> list[str]:
    """Classes minority first (fewest real train images), then the ones real images alone
    recognise worst: where a gain from synthetic data should show."""
    recall = summary.arms["real"].test.recall
    counts = train_counts or {}
    return sorted(recall, key=lambda c: (counts.get(c, 0), recall[c].mean))


def _recall_table(summary: Summary, order: list[str]) -> str:
    """Per-class test recall per arm, in `order`."""
    arms = summary.arms
    lines = ["| class | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    for c in order:
        lines.append(f"| {md(c)} | " + " | ".join(pct(arms[a].test.recall[c].mean) for a in arms) + " |")
    return "\n".join(lines)


def _device_line(device: dict | None) -> str:
    """' Computed on ...' from the run's device.json (graph.device_record)."""
    if not device:
        return ""
    where = device["device"] + (f" ({device['gpu']})" if device.get("gpu") else "")
    layout = ", channels_last" if device.get("gan_channels_last") else ""
    return (f" Computed on {where}: GAN {device['gan_precision']}{layout}, classifier "
            f"{device['classifier_precision']}.")


def _versions() -> str:
    names = ["torch", "torchvision", "albumentations", "imbalanced-learn", "scikit-learn", "prefect", "pandas"]
    found = []
    for n in names:
        try:
            found.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}; " + ", ".join(found)


def _fig(figs: dict[str, str], name: str, alt: str, missing: str = "") -> str:
    return f"![{alt}]({figs[name]})\n" if name in figs else missing


def render_markdown(cfg: Config, run_dir: Path, summary: Summary, frame: pd.DataFrame, ingest: dict,
                    quality: dict | None = None, history: pd.DataFrame | None = None,
                    figs: dict[str, str] | None = None, device: dict | None = None,
                    timings: dict[str, tuple[float, float]] | None = None) -> tuple[str, str]:
    """(report markdown, verdict paragraph) from the summary, the manifest, what the GAN recorded
    (gan/quality.json, gan/history.csv), ingest's record and the figures (name -> path relative to report/)."""
    figs = figs or {}
    para = verdict(summary, run_dir)
    order = class_order(summary, ingest["counts"].get("train"))
    size_note = f"Working size: {md(ingest['size_note'])}.\n\n" if ingest.get("size_note") else ""
    config_text = dump_config(cfg).rstrip()
    gan_part = ("Samples of the EMA generator after the last step, one row per class:\n\n" + _fig(figs, "gan_samples", "GAN samples")
                if "gan_samples" in figs else "The GAN stage was disabled.\n")
    walk = ("Latent-space walk between two noise vectors, one row per class (smooth change: the generator learned "
            "a space, not a list of training images):\n\n" + _fig(figs, "interpolation", "Latent interpolation")
            if "interpolation" in figs else "")
    text = f"""# Augmentation report

{verdict(summary, run_dir, md)}

## Per-arm results

Mean over {cfg.benchmark.seeds} seeds with a 95% Student-t interval; every arm trains the same
classifier for {summary.classifier_steps or cfg.benchmark.steps} steps and is scored on the same real val and test images.
{protocol_text(summary)}
{"Every arm draws classes equally often (class-balanced sampling, `benchmark.balanced_sampling`): the real train classes differ in size." if summary.balanced_sampling else ""}
{_side_stream_text(summary)}
{_arm_table(summary)}

## Gains ({METRIC_NAMES[summary.primary_metric]}, paired over seeds)

{_fig(figs, "gain", "Gain over real images alone, with 95% confidence intervals")}
{_gain_table(summary)}

## Linear probe in the SMOTE feature space

A logistic regression on the features SMOTE interpolated in (one deterministic fit per arm):
the SMOTE arm trains on its own feature rows, every other arm on the same features of its images.

{_linear_table(summary)}

## Per-class recall on test (where a gain comes from; minority classes first, then the weakest)

{_fig(figs, "recall", "Per-class recall, real vs the recommended arm")}
{_fig(figs, "confusion", "Test confusion matrices, real vs the recommended arm (rows: true class)")}
{_recall_table(summary, order)}

## Data

{size_note}{split_text(ingest, summary)}{data_table(frame)}

{skipped_inputs(frame)}

Train images per class and source (real, classical, SMOTE decoded to pixels, GAN kept):

{_fig(figs, "images", "Image grid: real vs classical vs SMOTE vs GAN, one row per class")}
{_fig(figs, "projection", "2-D projection of real and synthetic train images")}
## GAN

{gan_part}
{_fig(figs, "gan_curves", "GAN training curves")}
{walk}
### Quality gate and sample quality

{quality_section(cfg, quality, history, frame)}
## Config

{fence(config_text)}yaml
{config_text}
{fence(config_text)}

Versions: {_versions()}.{_device_line(device)}
{_timing_table(timings)}"""
    return text, para


def _timing_table(timings: dict[str, tuple[float, float]] | None) -> str:
    """The plan's estimate against the actual time of each stage that ran (when the plan was made)."""
    if not timings:
        return ""
    rows = "\n".join(f"| {name} | {est:.0f} | {actual:.0f} |" for name, (est, actual) in timings.items())
    est, actual = sum(e for e, _ in timings.values()), sum(a for _, a in timings.values())
    return (f"\n## Time\n\nThe plan's estimate (`augment run` prints it first) against each stage's time, in seconds:\n\n"
            f"| stage | estimate | actual |\n|---|---:|---:|\n{rows}\n| total | {est:.0f} | {actual:.0f} |\n")


def arm_rows(summary: Summary) -> list[dict]:
    """Per-arm results as plain rows (the Prefect table artifact and anything tabular)."""
    metric = summary.primary_metric
    rows = []
    for arm, result in summary.arms.items():
        t = result.test.metrics[metric]
        c = summary.comparison(arm, "real")
        g = None if c is None else c.test
        rows.append({
            "arm": arm,
            "recommended": arm == summary.recommendation.arm,
            "train_images": result.train_images,
            f"test_{metric}": round(t.mean, 4),
            "ci_low": round(t.ci_low, 4),
            "ci_high": round(t.ci_high, 4),
            f"val_{metric}": round(result.val.metrics[metric].mean, 4),
            "test_gain_over_real": None if g is None else round(g.gain, 4),
            "p_value": None if g is None or math.isnan(g.p_value) else round(g.p_value, 4),
        })
    return rows


def run_row(run: str, finished: str, data: dict, summary: Summary) -> dict:
    """One line of `augment runs`: when, on what data, the recommended arm and its test gain over real."""
    rec = summary.recommendation
    g = rec.test_gain_over_real
    metric = summary.primary_metric
    return {
        "run": run,
        "finished": pd.Timestamp(finished).tz_convert("UTC").strftime("%Y-%m-%d %H:%M"),
        "dataset": data.get("source", "?") + (f":{Path(data['path']).name}" if data.get("path") else ""),
        "train images": summary.train_images.get("real"),
        "recommended": rec.arm,
        "synthetic helps": rec.synthetic_helps_on_val,
        f"test {METRIC_NAMES[metric]}": pct(summary.mean(rec.arm, "test", metric)),
        "gain over real": f"{_pts(g.gain)} [{_pts(g.ci_low)}, {_pts(g.ci_high)}]",
        "p": _p(g.p_value),
        "test set": summary.held_out["test"].ids_sha256[:8] if "test" in summary.held_out else "?",
    }


def summary_markdown(summary: Summary, verdict_text: str) -> str:
    """The verdict and the two tables, without figures: for the Prefect UI and chat."""
    return f"# Augmentation report\n\n{md(verdict_text)}\n\n{_arm_table(summary)}\n\n## Gains\n\n{_gain_table(summary)}\n"
