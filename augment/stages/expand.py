"""Stage expand: an ImageFolder view of real train images plus the recommended arm's images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from augment import rundir
from augment.config import Config
from augment.registry import ARMS
from augment.summary import read_summary


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same run directory, same filesystem: no extra space
    except OSError:
        shutil.copyfile(src, dst)


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    """Build expanded/<label>/<id>.png for the arm the benchmark recommended (chosen on val).

    When no synthetic arm won, expanded/ holds the real train images (plus classical copies if
    that arm won): the tool does not hand over synthetic images it could not show to help. Arms
    that change only how batches are drawn (trivialaugment, balanced) add no files.
    """
    run_dir = Path(run_dir)
    arm = read_summary(run_dir).recommendation.arm
    spec = ARMS[arm]
    frame = rundir.read_manifest(run_dir)
    rows = frame[(frame["split"] == "train") & frame["source"].isin(spec.sources) & frame["kept"]]
    staging = run_dir / ".expanded.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    for rel, label, rid in zip(rows["path"], rows["label"], rows["id"]):
        _link_or_copy(run_dir / rel, staging / label / f"{rid}.png")
    target = run_dir / "expanded"
    old = run_dir / ".expanded.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)  # the view appears whole or not at all
    shutil.rmtree(old, ignore_errors=True)
    counts = rows.groupby("source").size().to_dict()
    how = ("train with torchvision's TrivialAugmentWide on the fly" if spec.augment
           else "train with class-balanced sampling" if spec.balanced else None)
    return {"arm": arm, "images": len(rows), "by_source": {k: int(v) for k, v in counts.items()}, "training": how}
