"""The report: a plain verdict first, then the per-arm table, gains, data counts and config."""

from __future__ import annotations

import base64
import json
import math
import platform
import re
from importlib import metadata
from pathlib import Path

import pandas as pd

from augment import manifest
from augment.benchmark import PRIMARY
from augment.config import Config, dump_config
from augment.runtime import combine, run_stage, stage_fingerprint, write_bytes, write_json, write_text

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


def _significance(g: dict) -> str:
    """'a significant gain' / 'a significant loss' / 'not statistically significant' (p < 0.05, CI excludes 0)."""
    if math.isnan(g["p_value"]) or g["p_value"] >= 0.05:
        return "not statistically significant"
    if g["ci_low"] > 0:
        return "a significant gain"
    return "a significant loss" if g["ci_high"] < 0 else "not statistically significant"


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
                f"paired t-test p={_p(g['p_value'])} over {seeds} seeds: {_significance(g)})."
            )
        else:
            lead += f"Real images alone scored {metric} {_pct(real_test)} on the test split ({seeds} seeds)."
        return lead + where
    g, gb = rec["test_gain_over_real"], rec["test_gain_over_best_baseline"]
    return (
        f"Expanding {n_images['real']} real training images to {n_images[arm]} with '{arm}' (chosen on the "
        f"validation split) changed {metric} on the untouched real test split from {_pct(real_test)} to "
        f"{_pct(test[arm]['test'][PRIMARY]['mean'])}: {_pts(g['gain'])} points, 95% CI [{_pts(g['ci_low'])}, "
        f"{_pts(g['ci_high'])}], paired t-test p={_p(g['p_value'])} over {seeds} seeds, "
        f"{_significance(g)}. Against the best arm "
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


def class_order(summary: dict, train_counts: dict[str, int] | None = None) -> list[str]:
    """Classes minority first (fewest real train images), then the ones real images alone
    recognise worst: where a gain from synthetic data should show."""
    real = summary["arms"]["real"]["test"]
    classes = [m[len("recall["):-1] for m in real if m.startswith("recall[")]
    counts = train_counts or {}
    return sorted(classes, key=lambda c: (counts.get(c, 0), real[f"recall[{c}]"]["mean"]))


def _recall_table(summary: dict, order: list[str]) -> str:
    """Per-class test recall per arm, in `order`."""
    arms = summary["arms"]
    lines = ["| class | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
    for c in order:
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
        "| class | kept | Frechet distance | precision | recall | diversity (all / kept) | median novelty | CAS recall | alarm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, c in q["classes"].items():
        k = c["kept"]
        lines.append(
            f"| {label} | {k['n']} | {_num(k['frechet_distance'])} | {_num(k['precision'])} | {_num(k['recall'])} "
            f"| {_num(c['generated']['diversity'])} / {_num(k['diversity'])} | {_num(c['median_novelty'])} "
            f"| {_pct(c['cas_recall'])} | {c['alarm'] or ''} |"
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


def _fig(figs: dict[str, str], name: str, alt: str, missing: str = "") -> str:
    return f"![{alt}]({figs[name]})\n" if name in figs else missing


def make_figures(run_dir: Path, summary: dict, frame: pd.DataFrame, per_class: int = 6) -> dict[str, str]:
    """Draw the report's figures into report/figures/; returns name -> path relative to report/."""
    from augment import figures
    from augment.data import ingest_info

    run_dir = Path(run_dir)
    out = run_dir / "report" / "figures"
    made: dict[str, str] = {}

    def done(name: str) -> None:
        made[name] = f"figures/{name}.png"

    metric = _NAMES[summary["primary_metric"]]
    vs_real = {name.removesuffix(" vs real"): g["test"] for name, g in summary["gains"].items() if name.endswith(" vs real")}
    if vs_real:
        figures.gain_chart(vs_real, metric, out / "gain.png")
        done("gain")
    info = ingest_info(run_dir)
    rec = summary["recommendation"]
    arm = rec["arm"] if rec["arm"] != "real" else (rec["best_synthetic"] or rec["best_baseline"])
    order = class_order(summary, info["counts"].get("train"))
    if arm and arm != "real" and order:
        recall = pd.DataFrame({a: [summary["arms"][a]["test"][f"recall[{c}]"]["mean"] for c in order]
                               for a in ("real", arm)}, index=order)
        figures.recall_chart(recall, arm, out / "recall.png")
        done("recall")

    size, channels = tuple(info["size"]), info["channels"]
    train = frame[(frame["split"] == "train") & frame["kept"] & frame["path"].notna()]
    rows: dict[str, dict] = {}
    for label in info["classes"]:
        rows[label] = {}
        for source, group in train[train["label"] == label].groupby("source"):
            rows[label][source] = manifest.load_images(run_dir, group["path"].head(per_class), size, channels)
    figures.image_grid(rows, out / "images.png")
    done("images")
    sample = pd.concat([g.sample(min(len(g), 300), random_state=0) for _, g in train.groupby("source")])
    pixels = manifest.load_images(run_dir, sample["path"], size, channels).reshape(len(sample), -1) / 255.0
    if len(sample) >= 3:
        figures.projection(pixels, sample["source"].tolist(), out / "projection.png")
        done("projection")

    gan_dir = run_dir / "gan"
    if (gan_dir / "history.csv").is_file():
        figures.training_curves(pd.read_csv(gan_dir / "history.csv"), out / "gan_curves.png")
        done("gan_curves")
    grids = sorted((gan_dir / "samples").glob("step_*.png"))
    for name, src in (("gan_samples", grids[-1] if grids else None), ("interpolation", gan_dir / "samples" / "interpolation.png")):
        if src is not None and src.is_file():
            write_bytes(out / f"{name}.png", src.read_bytes())
            done(name)
    return made


def render_markdown(cfg: Config, run_dir: Path, summary: dict, frame: pd.DataFrame,
                    figs: dict[str, str] | None = None) -> tuple[str, str]:
    """(report markdown, verdict paragraph) from the run's summary.json, manifest and figures."""
    from augment.data import ingest_info

    run_dir = Path(run_dir)
    figs = figs or {}
    para = verdict(summary, run_dir)
    order = class_order(summary, ingest_info(run_dir)["counts"].get("train"))
    gan_part = ("Samples of the EMA generator after the last step, one row per class:\n\n" + _fig(figs, "gan_samples", "GAN samples")
                if "gan_samples" in figs else "The GAN stage was disabled.\n")
    walk = ("Latent-space walk between two noise vectors, one row per class (smooth change: the generator learned "
            "a space, not a list of training images):\n\n" + _fig(figs, "interpolation", "Latent interpolation")
            if "interpolation" in figs else "")
    md = f"""# Augmentation report

{para}

## Per-arm results

Mean over {cfg.benchmark.seeds} seeds with a 95% Student-t interval; every arm trains the same
classifier for {cfg.benchmark.steps} steps and is scored on the same real val and test images.
The recommended arm is chosen on val ({summary['primary_metric'].replace('_', ' ')}), never on test.

{_arm_table(summary)}

## Gains ({_NAMES[summary['primary_metric']]}, paired over seeds)

{_fig(figs, "gain", "Gain over real images alone, with 95% confidence intervals")}
{_gain_table(summary)}

## Linear probe in the SMOTE feature space

A logistic regression on the features SMOTE interpolated in (one deterministic fit per arm):
the SMOTE arm trains on its own feature rows, every other arm on the same features of its images.

{_linear_table(summary)}

## Per-class recall on test (where a gain comes from; minority classes first, then the weakest)

{_fig(figs, "recall", "Per-class recall, real vs the recommended arm")}
{_recall_table(summary, order)}

## Data

{_data_table(frame)}

{_skipped_inputs(frame)}

Train images per class and source (real, classical, SMOTE decoded to pixels, GAN kept):

{_fig(figs, "images", "Image grid: real vs classical vs SMOTE vs GAN, one row per class")}
{_fig(figs, "projection", "2-D projection of real and synthetic train images")}
## GAN

{gan_part}
{_fig(figs, "gan_curves", "GAN training curves")}
{walk}
### Quality gate and sample quality

{_quality_section(cfg, run_dir, frame)}
## Config

```yaml
{dump_config(cfg).rstrip()}
```

Versions: {_versions()}.
"""
    return md, para


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 + p { font-size: 1.15em; background: #f4f7fb; border-left: 4px solid #1f77b4; padding: 0.8em 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def render_html(md: str, report_dir: Path) -> str:
    """One self-contained HTML page from the report's markdown: figures inlined as data: URIs,
    styles inline, no script and no link to anything outside the file."""
    import markdown

    body = markdown.markdown(md, extensions=["tables", "fenced_code"], output_format="html")

    def inline(match: re.Match) -> str:
        data = base64.b64encode((Path(report_dir) / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[A-Za-z0-9_]+\.png)"', inline, body)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>Augmentation report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def render_report(cfg: Config, run_dir: Path) -> str:
    """Write report/report.md, report/report.html (self-contained), figures and results.json
    from a finished run directory; recomputes nothing. Returns the verdict paragraph."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    frame = manifest.read(run_dir)
    figs = make_figures(run_dir, summary, frame)
    md, para = render_markdown(cfg, run_dir, summary, frame, figs)
    write_text(run_dir / "report" / "report.md", md)
    write_text(run_dir / "report" / "report.html", render_html(md, run_dir / "report"))
    write_json(run_dir / "report" / "results.json", {"verdict": para, **summary})
    return para


def report_stage(cfg: Config, run_dir: Path) -> dict:
    """The report stage: render_report once the benchmark and expand stages are done, and keep
    each new result in history/ (a scheduled job reuses its run directory: its trend lives there)."""
    run_dir = Path(run_dir)

    def body() -> dict:
        verdict = render_report(cfg, run_dir)
        record_history(cfg, run_dir)
        return {"verdict": verdict}

    fp = combine(stage_fingerprint(run_dir, "benchmark"), stage_fingerprint(run_dir, "expand"), cfg.section_hash(*Config.model_fields))
    return run_stage(run_dir, "report", fp, body)


def record_history(cfg: Config, run_dir: Path) -> Path | None:
    """history/<UTC time>-<benchmark fingerprint>.json: the results and data section of a new
    benchmark result. A report re-rendered over the same benchmark adds nothing."""
    from datetime import datetime, timezone

    bench = stage_fingerprint(run_dir, "benchmark")
    history = run_dir / "history"
    previous = sorted(history.glob("*.json"))
    if previous and previous[-1].stem.endswith(f"-{bench}"):
        return None
    now = datetime.now(timezone.utc)
    path = history / f"{now:%Y%m%dT%H%M%S.%fZ}-{bench}.json"
    results = json.loads((run_dir / "report" / "results.json").read_text())
    write_json(path, {"finished": now.isoformat(timespec="seconds"), "data": cfg.data.model_dump(mode="json"),
                      "results": results})
    return path


def rerender(run_dir: Path) -> str:
    """`augment report RUN_DIR`: re-render the report of a finished run with its frozen config."""
    from augment.config import load_config
    from augment.errors import UserError

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.yaml)")
    if stage_fingerprint(run_dir, "benchmark") is None:
        raise UserError(f"{run_dir}: the benchmark has not finished; run `augment run` to complete it first")
    return render_report(load_config(run_dir / "config.yaml"), run_dir)


def list_runs(root: Path) -> pd.DataFrame:
    """Every finished result under root, oldest first: when, on what data, the recommended arm and
    its test gain over real images alone. A run directory re-used by a scheduled job has one row
    per result it produced (history/); one without history (an older run) has one row."""
    import yaml

    rows = []
    for results in sorted(Path(root).rglob("report/results.json")):
        run_dir = results.parent.parent
        entries = [json.loads(p.read_text()) for p in sorted((run_dir / "history").glob("*.json"))]
        if not entries:
            try:
                data = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("data", {})
            except (OSError, yaml.YAMLError):
                data = {}
            finished = pd.Timestamp(results.stat().st_mtime, unit="s", tz="UTC")
            entries = [{"finished": finished.isoformat(), "data": data, "results": json.loads(results.read_text())}]
        for entry in entries:
            rows.append(_run_row(str(run_dir.relative_to(root)), entry))
    frame = pd.DataFrame(rows)
    return frame.sort_values("finished", kind="stable").reset_index(drop=True) if len(frame) else frame


def _run_row(run: str, entry: dict) -> dict:
    summary, data = entry["results"], entry["data"] or {}
    rec = summary["recommendation"]
    g = rec["test_gain_over_real"]
    metric = summary["primary_metric"]
    return {
        "run": run,
        "finished": pd.Timestamp(entry["finished"]).tz_convert("UTC").strftime("%Y-%m-%d %H:%M"),
        "dataset": data.get("source", "?") + (f":{Path(data['path']).name}" if data.get("path") else ""),
        "train images": summary["train_images"].get("real"),
        "recommended": rec["arm"],
        "synthetic helps": rec["synthetic_helps_on_val"],
        f"test {_NAMES[metric]}": _pct(summary["arms"][rec["arm"]]["test"][metric]["mean"]),
        "gain over real": f"{_pts(g['gain'])} [{_pts(g['ci_low'])}, {_pts(g['ci_high'])}]",
        "p": _p(g["p_value"]),
    }


def arm_rows(summary: dict) -> list[dict]:
    """Per-arm results as plain rows (the Prefect table artifact and anything tabular)."""
    metric = summary["primary_metric"]
    gains = summary["gains"]
    rows = []
    for arm, splits in summary["arms"].items():
        t = splits["test"][metric]
        g = gains.get(f"{arm} vs real", {}).get("test")
        rows.append({
            "arm": arm,
            "recommended": arm == summary["recommendation"]["arm"],
            "train_images": summary["train_images"][arm],
            f"test_{metric}": round(t["mean"], 4),
            "ci_low": round(t["ci_low"], 4),
            "ci_high": round(t["ci_high"], 4),
            f"val_{metric}": round(splits["val"][metric]["mean"], 4),
            "test_gain_over_real": None if g is None else round(g["gain"], 4),
            "p_value": None if g is None or math.isnan(g["p_value"]) else round(g["p_value"], 4),
        })
    return rows


def summary_markdown(summary: dict, verdict_text: str) -> str:
    """The verdict and the two tables, without figures: for the Prefect UI and chat."""
    return f"# Augmentation report\n\n{verdict_text}\n\n{_arm_table(summary)}\n\n## Gains\n\n{_gain_table(summary)}\n"
