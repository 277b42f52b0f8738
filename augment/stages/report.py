"""Stage report: figures, report.md, the self-contained report.html and results.json; the history of results.

Also the readers of finished run directories behind `augment report` and `augment runs`.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from augment import rundir
from augment.atomic import write_bytes, write_json, write_text
from augment.config import Config, ConfigWarning
from augment.core.report import figures
from augment.core.report.report_html import render_html
from augment.core.report.report_text import METRIC_NAMES, class_order, render_markdown, run_row
from augment.errors import UserError
from augment.summary import Summary, read_summary, summary_from_json, summary_json


def make_figures(run_dir: Path, summary: Summary, frame: pd.DataFrame, per_class: int = 6) -> dict[str, str]:
    """Draw the report's figures into report/figures/; returns name -> path relative to report/."""
    run_dir = Path(run_dir)
    out = run_dir / "report" / "figures"
    made: dict[str, str] = {}

    def done(name: str) -> None:
        made[name] = f"figures/{name}.png"

    metric = METRIC_NAMES[summary.primary_metric]
    vs_real = {c.arm: c.test.model_dump() for c in summary.comparisons if c.base == "real"}
    if vs_real:
        figures.gain_chart(vs_real, metric, out / "gain.png")
        done("gain")
    info = rundir.ingest_info(run_dir)
    rec = summary.recommendation
    arm = rec.arm if rec.arm != "real" else (rec.best_synthetic or rec.best_baseline)
    order = class_order(summary, info["counts"].get("train"))
    if arm and arm != "real" and order:
        recall = pd.DataFrame({a: [summary.arms[a].test.recall[c].mean for c in order] for a in ("real", arm)},
                              index=order)
        figures.recall_chart(recall, arm, out / "recall.png")
        done("recall")
        if {"real", arm} <= set(summary.confusion_test):
            figures.confusion_pair({a: summary.confusion_test[a] for a in ("real", arm)}, info["classes"],
                                   out / "confusion.png")
            done("confusion")

    size, channels, fit = tuple(info["size"]), info["channels"], info.get("fit", "pad")
    train = frame[(frame["split"] == "train") & frame["kept"] & frame["path"].notna()]
    rows: dict[str, dict] = {}
    for label in info["classes"]:
        rows[label] = {}
        for source, group in train[train["label"] == label].groupby("source"):
            rows[label][source] = rundir.load_images(run_dir, group["path"].head(per_class), size, channels, fit)
    figures.image_grid(rows, out / "images.png", _empty_gan_cells(frame, info["classes"]))
    done("images")
    sample = pd.concat([g.sample(min(len(g), 300), random_state=0) for _, g in train.groupby("source")])
    pixels = rundir.load_images(run_dir, sample["path"], size, channels, fit).reshape(len(sample), -1) / 255.0
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


def _empty_gan_cells(frame: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, str]]:
    """For each class whose GAN samples the gate all rejected: "gate kept 0 of N: <main reasons>"."""
    gan = frame[frame["source"] == "gan"]
    notes: dict[str, dict[str, str]] = {}
    for label in classes:
        mine = gan[gan["label"] == label]
        if len(mine) and not mine["kept"].any():
            why = mine["reason_code"].fillna("other").str.replace("_", " ").value_counts()
            notes[label] = {"gan": f"gate kept 0 of {len(mine)}: " + ", ".join(f"{n} {k}" for k, n in why.head(2).items())}
    return notes


def render_report(cfg: Config, run_dir: Path) -> str:
    """Write report/report.md, report/report.html (self-contained), figures and results.json
    from a finished run directory; recomputes nothing. Returns the verdict paragraph."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    frame = rundir.read_manifest(run_dir)
    figs = make_figures(run_dir, summary, frame)
    quality_path, history_path = run_dir / "gan" / "quality.json", run_dir / "gan" / "history.csv"
    quality = json.loads(quality_path.read_text()) if quality_path.is_file() else None
    history = pd.read_csv(history_path) if history_path.is_file() else None
    device = json.loads((run_dir / rundir.DEVICE).read_text()) if (run_dir / rundir.DEVICE).is_file() else None
    timings = {}  # the stages that ran this time: the plan's estimate beside the actual seconds
    for path in sorted((run_dir / "stages").glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("estimate_seconds") is not None:
            timings[path.stem] = (record["estimate_seconds"], record["seconds"])
    md, para = render_markdown(cfg, run_dir, summary, frame, rundir.ingest_info(run_dir), quality, history, figs, device,
                               timings)
    write_text(run_dir / "report" / "report.md", md)
    write_text(run_dir / "report" / "report.html", render_html(md, run_dir / "report"))
    write_json(run_dir / "report" / "results.json", {"verdict": para, **summary_json(summary)})
    return para


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    """render_report, and keep each new result in history/ (a scheduled job reuses its run
    directory: its trend lives there)."""
    verdict = render_report(cfg, run_dir)
    record_history(cfg, run_dir)
    return {"verdict": verdict}


def record_history(cfg: Config, run_dir: Path) -> Path | None:
    """history/<UTC time>-<benchmark fingerprint>.json: the results and data section of a new
    benchmark result. A report re-rendered over the same benchmark adds nothing."""
    bench = rundir.recorded_fingerprint(run_dir, "benchmark")
    history = Path(run_dir) / "history"
    previous = sorted(history.glob("*.json"))
    if previous and previous[-1].stem.endswith(f"-{bench}"):
        return None
    now = datetime.now(timezone.utc)
    path = history / f"{now:%Y%m%dT%H%M%S.%fZ}-{bench}.json"
    results = json.loads((Path(run_dir) / "report" / "results.json").read_text())
    write_json(path, {"finished": now.isoformat(timespec="seconds"), "data": cfg.data.model_dump(mode="json"),
                      "results": results})
    return path


def rerender(run_dir: Path) -> str:
    """`augment report RUN_DIR`: re-render the report of a finished run with its frozen config,
    holding the run lock (a run under way on the directory makes it a one-line error)."""
    from augment.config_file import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.yaml)")
    if rundir.recorded_fingerprint(run_dir, "benchmark") is None:
        raise UserError(f"{run_dir}: the benchmark has not finished; run `augment run` to complete it first")
    with rundir.run_lock(run_dir), warnings.catch_warnings():  # never beside a run writing the same files
        warnings.simplefilter("ignore", ConfigWarning)  # the frozen config sets every key: none was the user's
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
            rows.append(run_row(str(run_dir.relative_to(root)), entry["finished"], entry["data"] or {},
                                summary_from_json(entry["results"])))
    frame = pd.DataFrame(rows)
    return frame.sort_values("finished", kind="stable").reset_index(drop=True) if len(frame) else frame
