"""Folders and machines the user does not control: hostile names, special files, foreign run directories."""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from augment.safe_text import fence, md, mpl, printable
from augment.errors import UserError
from augment.graph import load_config, run_pipeline
from conftest import REPO, SMOKE, write_image_folder

HOSTILE = {"script": "<img src=x onerror=alert(1)>", "mathtext": "$^^$ cost", "pipe": "a|b"}
TINY = ["data.per_class=null", "benchmark.seeds=1", "benchmark.steps=5", "gan.steps=2", "gan.samples_per_class=2"]


def checksums(root) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def cli(*args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess, float]:
    """`augment ...` in a real subprocess: a hang fails the test at `timeout` instead of hiding."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return done, time.monotonic() - start


def test_escaping_rules():
    assert md(HOSTILE["script"]) == r"\<img src=x onerror=alert(1)\>"
    assert md("a|b") == r"a\|b" and md("*x* _y_ [l](u) `c` &amp; $m$") == r"\*x\* \_y\_ \[l\](u) \`c\` \&amp; \$m\$"
    assert printable("a\nb\x00") == r"a\x0ab\x00" and printable(os.fsdecode(b"caf\xe9")) == r"caf\xe9"
    assert printable("cod\u202eexe.png\u200b") == r"cod\u202eexe.png\u200b"  # a right-to-left override shown, not obeyed
    assert mpl(r"$\foo$") == r"\$\foo\$"
    assert fence("no ticks") == "```" and fence("a ```` b") == "`````"


def test_raw_html_in_the_markdown_is_shown_as_text(tmp_path):
    from augment.core.report.report_html import render_html

    html = render_html("# t\n\n<script>alert(1)</script> <img src=x onerror=alert(1)>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
                       tmp_path)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<table>" in html


def test_a_matplotlib_label_is_never_mathtext(tmp_path):
    import pandas as pd

    from augment.core.report import figures

    recall = pd.DataFrame({"real": [0.5, 0.6], "real+gan": [0.7, 0.8]}, index=["$^^$", r"$\foo$"])
    assert figures.recall_chart(recall, "real+gan", tmp_path / "recall.png").stat().st_size > 0


def test_hostile_class_and_file_names_are_escaped_in_the_report(tmp_path):
    classes = {HOSTILE["script"]: 8, HOSTILE["mathtext"]: 8, HOSTILE["pipe"]: 8}
    root = write_image_folder(tmp_path / "in", classes, size=(8, 8))
    (root / HOSTILE["pipe"] / "<b onclick=x>bold.png").write_bytes(b"")  # a broken file: named in the skipped table
    (root / HOSTILE["pipe"] / os.fsdecode(b"bad\xff.png")).write_bytes(b"")
    os.mkdir(os.path.join(os.fsencode(root), b"caf\xe9"))  # a class folder whose name is not UTF-8
    write_image_folder(tmp_path / "tmp", {"x": 8}, size=(8, 8))
    for p in (tmp_path / "tmp" / "x").iterdir():
        os.rename(os.fsencode(p), os.path.join(os.fsencode(root), b"caf\xe9", os.fsencode(p.name)))
    cfg = load_config(SMOKE, ["data.source=folder", f"data.path={root}", "data.on_bad_image=skip", *TINY])
    run_pipeline(cfg, tmp_path / "run")  # the report stage succeeds, mathtext and all
    report = tmp_path / "run" / "report"
    text, html = (report / "report.md").read_text(), (report / "report.html").read_text()
    assert HOSTILE["script"] not in text and md(HOSTILE["script"]) in text
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b onclick" not in html and "&lt;b onclick=x&gt;bold.png" in html and r"bad\xff.png" in html
    assert "caf\ufffd" in html  # the class, its odd byte shown as U+FFFD
    from markdown_it import MarkdownIt

    widths, row = [], 0  # cells per row of each table: a | in a name would add one
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "table_open":
            widths.append(set())
        elif token.type == "tr_open":
            row = 0
        elif token.type in ("td_open", "th_open"):
            row += 1
        elif token.type == "tr_close":
            widths[-1].add(row)
    assert len(widths) >= 5 and all(len(w) == 1 for w in widths), widths
    assert f"| {md(HOSTILE['pipe'])} |" in text


def special_file(tmp_path, kind: str):
    """A dataset folder whose class 'b' holds one special file, or a CSV naming one."""
    root = write_image_folder(tmp_path / "in", {"a": 8, "b": 8}, size=(8, 8))
    if kind == "fifo in a class folder":
        os.mkfifo(root / "b" / "pipe.png")
        return root, root / "b" / "pipe.png", ["data.source=folder"]
    if kind == "symlink to a fifo":
        os.mkfifo(root / "b" / ".hidden_pipe")
        (root / "b" / "link.png").symlink_to(root / "b" / ".hidden_pipe")
        return root, root / "b" / "link.png", ["data.source=folder"]
    rows = [f"{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    if kind == "csv row /dev/zero":
        rows.append("/dev/zero,b")
    elif kind == "csv row symlink to /dev/zero":
        (root / "b" / "zero.png").symlink_to("/dev/zero")
        rows.append("b/zero.png,b")
    else:  # csv row fifo
        os.mkfifo(root / "b" / "pipe.png")
        rows.append("b/pipe.png,b")
    (root / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return root / "list.csv", root / "list.csv", ["data.source=csv"]


@pytest.mark.slow  # a real `augment run` per case: a hang fails at the subprocess timeout
@pytest.mark.parametrize("kind", ["fifo in a class folder", "symlink to a fifo", "csv row /dev/zero",
                                  "csv row symlink to /dev/zero", "csv row fifo"])
def test_special_files_give_one_line_within_seconds(tmp_path, kind):
    path, named, keys = special_file(tmp_path, kind)
    sets = [a for k in [*keys, f"data.path={path}", *TINY] for a in ("--set", k)]
    done, seconds = cli("run", str(SMOKE), "--run-dir", str(tmp_path / "run"), "-q", *sets)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("augment: error:")]
    assert len(lines) == 1 and str(named) in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and seconds < 60


def test_a_special_file_is_a_recorded_skip_with_on_bad_image_skip(tmp_path):
    from augment.config import DataConfig
    from augment.core.data.sources import read_folder

    root = write_image_folder(tmp_path / "in", {"a": 4, "b": 4}, size=(8, 8))
    os.mkfifo(root / "b" / "pipe.png")
    data = read_folder(DataConfig(source="folder", path=root, min_per_class=3, on_bad_image="skip"))
    assert len(data.images) == 8 and data.skipped[0]["origin"] == str(root / "b" / "pipe.png")
    assert data.skipped[0]["reason"].startswith("not a regular file: a FIFO")


@pytest.mark.slow
def test_a_foreign_run_directory_is_refused_and_left_as_it_was(tmp_path):
    foreign = tmp_path / "mine"
    (foreign / "expanded").mkdir(parents=True)
    (foreign / "notes.txt").write_text("my notes")
    (foreign / ".draft.tmp").write_text("not the tool's")
    (foreign / "expanded" / "keep.png").write_bytes(b"png")
    before = checksums(foreign)
    done, _ = cli("run", str(SMOKE), "--run-dir", str(foreign), "-q", "--set", "benchmark.seeds=1")
    assert done.returncode == 2 and f"augment: error: run directory {foreign} is not empty and was not made by augment" \
        in done.stderr, done.stderr[-2000:]
    assert checksums(foreign) == before


def test_the_dataset_inside_the_run_directory_is_refused(tmp_path):
    from augment.graph import check_run_dir

    root = write_image_folder(tmp_path / "run" / "data", {"a": 8, "b": 8}, size=(8, 8))
    cfg = load_config(SMOKE, ["data.source=folder", f"data.path={root}"])
    with pytest.raises(UserError, match=r"data.path .* is inside the run directory"):
        check_run_dir(cfg, tmp_path / "run")


def test_a_new_run_directory_is_marked_and_an_older_run_directory_is_still_used(tmp_path):
    from augment.rundir import MARKER, claim

    (tmp_path / "new").mkdir()
    claim(tmp_path / "new")
    assert (tmp_path / "new" / MARKER).is_file()
    old = tmp_path / "old"  # a run directory of a version before the marker, stopped during ingest
    (old / "images").mkdir(parents=True)
    (old / "config.yaml").write_text("{}\n")
    (old / ".lock").write_text("1\n")
    claim(old)
    assert (old / MARKER).is_file()


def test_idx_files_truncated_or_over_large_give_one_line(tmp_path):
    import gzip
    import struct

    from augment.core.data.idx import read_idx_files

    labels = struct.pack(">BBBBI", 0, 0, 8, 1, 2) + bytes([0, 1])
    cases = {
        "truncated": gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 28, 28) + bytes(1000))[:-40],
        "over-large": gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2**20, 2**10, 2**10) + bytes(1000)),
        "longer than declared": gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 2, 2) + bytes(9)),
    }
    for name, content in cases.items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        (d / "x-images-idx3-ubyte.gz").write_bytes(content)
        (d / "x-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
        with pytest.raises(UserError) as err:
            read_idx_files(d)
        assert str(d / "x-images-idx3-ubyte.gz") in str(err.value) and "\n" not in str(err.value), name
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "x-images-idx3-ubyte")
    (fifo / "x-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(UserError, match="not a regular file"):
        read_idx_files(fifo)


def test_a_label_too_long_for_a_folder_is_one_line(tmp_path):
    from augment.config import DataConfig
    from augment.core.data.sources import read_csv

    root = write_image_folder(tmp_path / "in", {"a": 4, "b": 4}, size=(8, 8))
    rows = [f"{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    rows[-1] = rows[-1].rsplit(",", 1)[0] + "," + "x" * 300
    (root / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"list.csv:9: class name 'x+'\.\.\. is 300 bytes long; a folder name holds at most 255"):
        read_csv(DataConfig(source="csv", path=root / "list.csv", min_per_class=3))


def test_errors_no_retry_can_heal_are_never_retried_and_are_one_line(tmp_path):
    import errno

    from augment.errors import MachineError
    from augment.graph import _disk_errors
    from flows.augment_flow import is_transient

    class State:
        def __init__(self, exc):
            self.data = exc

    for code in (errno.ENAMETOOLONG, errno.ENOSPC, errno.EACCES, errno.EROFS):
        assert not is_transient(None, None, State(OSError(code, os.strerror(code), "f")))
    assert is_transient(None, None, State(OSError(errno.EIO, "Input/output error", "f")))  # may pass: retried
    with pytest.raises(MachineError, match=r"^stage gan part 1 cannot write /r/x.png: the file name is too long") as err:
        with _disk_errors("stage gan part 1"):
            raise OSError(errno.ENAMETOOLONG, "File name too long", "/r/x.png")
    assert "\n" not in str(err.value) and err.value.exit_status == 3


def test_a_class_folder_of_240_bytes_runs_and_its_files_fit(tmp_path):
    from augment.safe_text import file_label

    assert file_label("a" * 64) == "a" * 64 and len(file_label("é" * 120).encode()) <= 64
    long = "é" * 120  # 240 bytes: a folder name the file system allows
    root = write_image_folder(tmp_path / "in", {long: 8, "b": 8}, size=(8, 8))
    run_pipeline(load_config(SMOKE, ["data.source=folder", f"data.path={root}", *TINY]), tmp_path / "run")
    assert (tmp_path / "run" / "expanded" / long).is_dir()
    assert max(len(os.fsencode(p.name)) for p in (tmp_path / "run").rglob("*")) <= 255


def test_nested_composes_run_in_the_classical_stage(tmp_path):
    from augment import rundir
    from augment.graph import run_stage

    one_of = ('[{"__class_fullname__": "OneOf", "p": 1.0, "transforms": ['
              '{"__class_fullname__": "Rotate", "limit": 10, "p": 1.0}, {"__class_fullname__": "HorizontalFlip", "p": 1.0}]}]')
    cfg = load_config(SMOKE, [f"classical.transforms={one_of}"])
    run_stage("ingest", cfg, tmp_path / "run")
    run_stage("classical", cfg, tmp_path / "run")
    assert (rundir.read_manifest(tmp_path / "run")["source"] == "classical").sum() > 0
    with pytest.raises(UserError, match=r"classical.transforms.*item 0 \(OneOf\).*'bogus' are not valid for transform Rotate"):
        load_config(SMOKE, ['classical.transforms=[{"__class_fullname__": "OneOf", "transforms": '
                            '[{"__class_fullname__": "Rotate", "bogus": 1}]}]'])


def test_large_photos_are_decoded_small_and_resize_the_same(tmp_path):
    import numpy as np
    from PIL import Image

    from augment.config import DataConfig
    from augment.core.data.sources import _open_image

    yy, xx = np.mgrid[0:1200, 0:1600]
    smooth = np.stack([(xx / 1600 * 255), (yy / 1200 * 255), ((xx + yy) % 400 < 200) * 200.0], -1).astype(np.uint8)
    for name in ("photo.jpg", "scan.png"):
        Image.fromarray(smooth).save(tmp_path / name)
        full = _open_image(tmp_path / name, DataConfig(source="folder", path=tmp_path, image_size="native", channels=3))
        small = _open_image(tmp_path / name, DataConfig(source="folder", path=tmp_path, image_size=32, channels=3))
        assert full.shape == (1200, 1600, 3) and 64 <= min(small.shape[:2]) < 128, small.shape
        at = [np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR), float) for a in (full, small)]
        assert np.abs(at[0] - at[1]).mean() < 4, name  # the working-size image barely changes


@pytest.mark.slow
@pytest.mark.parametrize("command", [["init"], ["run", "--plan"]])
def test_the_survey_and_the_plan_never_open_a_fifo(tmp_path, command):
    """`augment init` and the plan read image headers: a FIFO among the images is counted, never opened."""
    root = write_image_folder(tmp_path / "in", {"a": 8, "b": 8}, size=(8, 8))
    os.mkfifo(root / "b" / "pipe.png")
    if command == ["init"]:
        done, seconds = cli("init", str(root), "--out", str(tmp_path / "mine.yaml"))
        assert done.returncode == 0 and (tmp_path / "mine.yaml").is_file(), done.stderr[-2000:]
    else:
        done, seconds = cli("run", str(SMOKE), "--plan", "--run-dir", str(tmp_path / "run"), "--set", "data.source=folder",
                            "--set", f"data.path={root}", "--set", "data.per_class=null")
        assert done.returncode in (0, 2) and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert seconds < 60


def test_class_folders_that_differ_only_in_bytes_that_are_not_utf8_are_not_merged(tmp_path):
    from augment.config import DataConfig
    from augment.core.data.sources import read_folder

    root = write_image_folder(tmp_path / "in", {"a": 4}, size=(8, 8))
    for odd in (b"caf\xe9", b"caf\xe8"):
        os.mkdir(os.path.join(os.fsencode(root), odd))
        for p in sorted((root / "a").iterdir()):
            with open(os.path.join(os.fsencode(root), odd, os.fsencode(p.name)), "wb") as f:
                f.write(p.read_bytes())
    with pytest.raises(UserError, match=r"caf\\xe9: class folder names the same class 'caf\ufffd' as .*caf\\xe8"):
        read_folder(DataConfig(source="folder", path=root, min_per_class=3))
