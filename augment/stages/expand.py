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


def how_to_train(cfg: Config, summary, arm: str, rows) -> str:
    """expanded/README.md: the recipe the benchmark measured, for users outside PyTorch."""
    spec, b = ARMS[arm], cfg.benchmark
    real = rows[rows["source"] == "real"]
    lines = [f"# Expanded dataset: arm `{arm}` ({spec.description})", "",
             f"An ImageFolder (`<class>/<id>.png`): {len(real)} real train images"
             + "".join(f", {n} {source}" for source, n in rows[rows["source"] != "real"].groupby("source").size().items())
             + ". The file name is the manifest id (manifest.parquet: source, parent, seed, split).", "",
             "To reproduce the benchmark's gain, train as it did:", ""]
    choice = summary.side_stream.get(arm)
    if choice is not None:
        ids = ", ".join(sorted(set(rows["source"]) - {"real"}))
        lines.append(f"- Synthetic images ({ids}; file names not starting with `real-`) are {choice.share:.0%} of "
                     f"every batch, the rest real images (chosen on {choice.chosen_on}), with loss weight "
                     f"{choice.weight:g}" + (f" and soft labels (temperature {choice.temperature:g})" if choice.soft_labels else "")
                     + ". Pouring them in with the real images is not what was measured.")
    if spec.augment:
        lines.append("- TrivialAugmentWide (torchvision) on every image of every batch.")
    if spec.balanced:
        lines.append("- Class-balanced sampling: every class drawn equally often.")
    lines.append(f"- {summary.classifier_steps or b.steps} steps of batch {b.batch_size}, AdamW lr {b.lr:g}, weight decay "
                 f"{b.weight_decay:g}, {b.schedule} schedule (README, \"The benchmark's classifier\").")
    return "\n".join(lines) + "\n"


def run(cfg: Config, run_dir: Path, progress=None, fingerprint: str = "") -> dict:
    """Build expanded/<label>/<id>.png for the arm the benchmark recommended (chosen on val).

    When no synthetic arm won, expanded/ holds the real train images (plus classical copies if
    that arm won): the tool does not hand over synthetic images it could not show to help. Arms
    that change only how batches are drawn (trivialaugment, balanced) add no files.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    arm = summary.recommendation.arm
    spec = ARMS[arm]
    frame = rundir.read_manifest(run_dir)
    rows = frame[(frame["split"] == "train") & frame["source"].isin(spec.sources) & frame["kept"]]
    staging = run_dir / ".expanded.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    for rel, label, rid in zip(rows["path"], rows["label"], rows["id"]):
        _link_or_copy(run_dir / rel, staging / label / f"{rid}.png")
    (staging / "README.md").write_text(how_to_train(cfg, summary, arm, rows))
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
