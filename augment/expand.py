"""The expanded dataset: an ImageFolder view of real train images plus the recommended arm's images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from augment import manifest
from augment.benchmark import ARMS
from augment.config import Config
from augment.runtime import combine, run_stage, stage_fingerprint


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same run directory, same filesystem: no extra space
    except OSError:
        shutil.copyfile(src, dst)


def expand_stage(cfg: Config, run_dir: Path) -> dict:
    """Build expanded/<label>/<id>.png for the arm the benchmark recommended (chosen on val).

    When no synthetic arm won, expanded/ holds the real train images (plus classical copies if
    that arm won): the tool does not hand over synthetic images it could not show to help. Arms
    that change only how batches are drawn (trivialaugment, balanced) add no files.
    """
    run_dir = Path(run_dir)

    def body() -> dict:
        summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
        arm = summary["recommendation"]["arm"]
        frame = manifest.read(run_dir)
        rows = frame[(frame["split"] == "train") & frame["source"].isin(ARMS[arm].sources) & frame["kept"]]
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
        spec = ARMS[arm]
        how = ("train with torchvision's TrivialAugmentWide on the fly" if spec.augment
               else "train with class-balanced sampling" if spec.balanced else None)
        return {"arm": arm, "images": len(rows), "by_source": {k: int(v) for k, v in counts.items()}, "training": how}

    return run_stage(run_dir, "expand", combine(stage_fingerprint(run_dir, "benchmark")), body)
