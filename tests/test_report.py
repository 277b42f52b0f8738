"""The stakeholder report: self-contained HTML, figures, the headline, re-rendering and the run history."""

import json
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from augment.core.report.numbers import pct
from augment.stages.report import list_runs
from flows.cli import main

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
FIGURES = {"gain", "recall", "confusion", "images", "projection", "gan_curves", "gan_samples", "interpolation"}


class StrictParser(HTMLParser):
    """Tag balance (every opened element closed, in order) and every outside reference."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.refs, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "srcset", "action", "data")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def test_html_report_is_valid_and_references_nothing_outside_itself(smoke_run):
    _, run_dir, _ = smoke_run
    html = (run_dir / "report" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    parser = StrictParser()
    parser.feed(html)
    parser.close()
    assert not parser.errors and not parser.stack
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    images = [v for tag, k, v in parser.refs if tag == "img"]
    assert len(images) == len(FIGURES) and all(v.startswith("data:image/png;base64,") for v in images)
    assert not [r for r in parser.refs if r[0] != "img"]  # no links out
    assert "url(" not in html and "@import" not in html


def test_every_figure_is_a_non_empty_image(smoke_run):
    _, run_dir, _ = smoke_run
    figures = {p.stem: p for p in (run_dir / "report" / "figures").glob("*.png")}
    assert set(figures) == FIGURES
    for path in figures.values():
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.size > 1000 and pixels.std() > 5, path.name  # not blank


def test_headline_matches_summary_json(smoke_run):
    _, run_dir, info = smoke_run
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    results = json.loads((run_dir / "report" / "results.json").read_text())
    html = (run_dir / "report" / "report.html").read_text()
    headline = html.split("<h1>Augmentation report</h1>")[1].split("<p>")[1].split("</p>")[0]
    assert results["verdict"] == info["report"]["verdict"]
    rec = summary["recommendation"]
    metric = summary["primary_metric"]
    for arm in {rec["arm"], "real"}:
        assert pct(summary["arms"][arm]["test"]["metrics"][metric]["mean"]) in headline
    assert rec["best_baseline"] in headline or rec["arm"] in headline
    if rec["arm"] != "real":
        assert f"{100 * rec['test_gain_over_real']['gain']:+.1f} points" in headline


def test_augment_report_rerenders_without_recomputing(smoke_run, tmp_path, capsys):
    _, run_dir, _ = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    markers = {p.name: p.stat().st_mtime_ns for p in (copy / "stages").iterdir()}
    (copy / "report" / "report.html").unlink()
    shutil.rmtree(copy / "report" / "figures")
    assert main(["report", str(copy)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (copy / "report" / "report.html").is_file() and len(list((copy / "report" / "figures").iterdir())) == len(FIGURES)
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "stages").iterdir()} == markers  # no stage ran
    from augment.safe_text import md as md_text

    md = (copy / "report" / "report.md").read_text().replace(md_text(copy), md_text(run_dir))
    assert md == (run_dir / "report" / "report.md").read_text()


def test_augment_report_on_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"augment: error: {tmp_path}: not a run directory (no config.yaml)" in capsys.readouterr().err


def test_augment_runs_lists_finished_runs(smoke_run, capsys):
    _, run_dir, _ = smoke_run
    table = list_runs(run_dir.parent)
    row = table[table["run"] == run_dir.name].iloc[-1]  # its latest result
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    assert row["recommended"] == summary["recommendation"]["arm"] and row["dataset"] == "digits"
    assert main(["runs", str(run_dir.parent)]) == 0
    out = capsys.readouterr().out
    assert run_dir.name in out and "gain over real" in out
    assert main(["runs", str(run_dir / "nowhere")]) == 2


def test_a_reused_run_directory_keeps_one_history_entry_per_result(smoke_run, tmp_path):
    """A scheduled job re-uses its run directory: each new benchmark result is kept in history/ and
    listed by `augment runs`; a run that changed nothing (all cached) or only re-rendered adds none."""
    from augment.graph import load_config
    from augment.graph import run_pipeline
    from conftest import SMOKE

    _, source, _ = smoke_run
    run_dir = tmp_path / "nightly"
    shutil.copytree(source, run_dir)
    for extra in (run_dir / "history").glob("*.json"):
        extra.unlink()
    run_pipeline(load_config(SMOKE, ["benchmark.seeds=2"]), run_dir)  # a new result
    run_pipeline(load_config(SMOKE, ["benchmark.seeds=2"]), run_dir)  # nothing changed
    run_pipeline(load_config(SMOKE, ["benchmark.seeds=2", "orchestration.retries=0"]), run_dir)  # re-render only
    assert len(list((run_dir / "history").glob("*.json"))) == 1
    run_pipeline(load_config(SMOKE, ["benchmark.seeds=3"]), run_dir)  # a new result again
    table = list_runs(tmp_path)
    assert table["run"].tolist() == ["nightly", "nightly"] and table["finished"].is_monotonic_increasing
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    assert table.iloc[-1]["recommended"] == summary["recommendation"]["arm"]


def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed")
def test_report_renders_in_headless_chromium(smoke_run, tmp_path):
    """The page as a browser shows it: the headline in the DOM, the figures drawn on screen."""
    _, run_dir, info = smoke_run
    url = (run_dir / "report" / "report.html").as_uri()
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert info["report"]["verdict"].split(".")[0] in dom.replace("&amp;", "&")
    assert dom.count('<img alt="') == len(FIGURES)
    shot = tmp_path / "page.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1100,9000", url], capture_output=True,
                   timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # The recall chart's blue bars (#1f77b4) cover far more than the headline's 4-pixel border.
    blue = (np.abs(pixels - [0x1F, 0x77, 0xB4]).sum(axis=2) < 30).sum()
    assert blue > 5000


def test_outputs_are_readable_by_others_like_any_created_file(smoke_run):
    import os

    _, run_dir, _ = smoke_run
    umask = os.umask(0)
    os.umask(umask)
    for rel in ("report/report.html", "manifest.parquet", "report/figures/gain.png"):
        assert (run_dir / rel).stat().st_mode & 0o777 == 0o666 & ~umask, rel


def test_a_run_without_any_generator_still_reports(tmp_path):
    from augment.graph import load_config
    from augment.graph import run_pipeline
    from conftest import SMOKE

    cfg = load_config(SMOKE, ["gan.enabled=false", "classical.enabled=false", "smote.enabled=false",
                              "benchmark.seeds=2", "benchmark.steps=10"])
    verdict = run_pipeline(cfg, tmp_path / "run")["report"]["verdict"]
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    assert verdict in unescape(html)
    assert "The GAN stage was disabled." in html
    assert {p.stem for p in (tmp_path / "run" / "report" / "figures").glob("*.png")} <= FIGURES


def test_a_class_whose_gan_samples_were_all_rejected_gets_words_not_an_empty_cell():
    import pandas as pd

    from augment.stages.report import _empty_gan_cells

    frame = pd.DataFrame({"source": ["gan"] * 5 + ["real"], "label": ["a", "a", "a", "b", "b", "a"],
                          "kept": [False, False, False, True, False, True],
                          "reason_code": ["low_confidence", "low_confidence", "near_copy", None, "surplus", None]})
    assert _empty_gan_cells(frame, ["a", "b"]) == {"a": {"gan": "gate kept 0 of 3: 2 low confidence, 1 near copy"}}


def test_augment_runs_says_when_runs_were_scored_on_different_test_sets(smoke_run, tmp_path, capsys):
    """Ids come from image content, so the test set's digest names the same images in every run;
    rows on another test set are flagged as not comparable."""
    _, source, _ = smoke_run
    for name in ("a", "b"):
        shutil.copytree(source, tmp_path / name)
    assert main(["runs", str(tmp_path)]) == 0
    assert "different test sets" not in capsys.readouterr().out  # same images: comparable
    for entry in (tmp_path / "b" / "history").glob("*.json"):  # b: as if scored on other test images
        data = json.loads(entry.read_text())
        data["results"]["held_out"]["test"]["ids_sha256"] = "0" * 64
        entry.write_text(json.dumps(data))
    table = list_runs(tmp_path)
    assert table.groupby("run")["test set"].first().to_dict() == {
        "a": json.loads((source / "benchmark" / "summary.json").read_text())["held_out"]["test"]["ids_sha256"][:8],
        "b": "00000000"}
    assert main(["runs", str(tmp_path)]) == 0
    assert "scored on 2 different test sets" in capsys.readouterr().out


def test_the_report_says_where_the_splits_came_from_and_names_the_test_set(smoke_run):
    _, run_dir, _ = smoke_run
    md = (run_dir / "report" / "report.md").read_text()
    digest = json.loads((run_dir / "benchmark" / "summary.json").read_text())["held_out"]["test"]["ids_sha256"][:12]
    assert "how each real image's split was decided:" in md and "by content hash" in md and "`data.split: hash`" in md
    assert f"The test set is `{digest}`" in md
